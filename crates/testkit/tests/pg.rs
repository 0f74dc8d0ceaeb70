use std::net::TcpStream;
use std::time::Duration;

use testkit::{PgCluster, free_port};

#[test]
fn free_port_is_nonzero() {
    assert_ne!(free_port(), 0);
}

#[test]
fn cluster_runs_queries_and_stops_on_drop() -> Result<(), String> {
    let pg = PgCluster::start()?;
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    assert_eq!(pg.psql("postgres", "select 1")?.trim(), "1");

    let a = pg.create_database("alpha")?;
    let b = pg.create_database("beta")?;
    assert_eq!(a, format!("postgres://postgres@127.0.0.1:{port}/alpha"));
    assert_eq!(b, format!("postgres://postgres@127.0.0.1:{port}/beta"));
    pg.psql("alpha", "create table t (x int); insert into t values (41)")?;
    assert_eq!(pg.psql("alpha", "select x + 1 from t")?.trim(), "42");
    // beta is a separate database: no table t there.
    assert!(pg.psql("beta", "select x from t").is_err());
    assert!(
        pg.create_database("alpha").is_err(),
        "duplicate database must fail"
    );
    assert!(pg.create_database("bad-name;").is_err());

    let dir = pg.bindir().to_path_buf();
    assert!(dir.join("psql").is_file());
    drop(pg);
    let addr = ("127.0.0.1", port);
    assert!(
        TcpStream::connect(addr).is_err(),
        "port {port} still accepts connections after drop"
    );
    Ok(())
}

#[test]
fn shared_is_started_once() -> Result<(), String> {
    let first = PgCluster::shared()?.url();
    let second = PgCluster::shared()?.url();
    assert_eq!(first, second);
    let shared = PgCluster::shared()?;
    let db1 = shared.fresh_database()?;
    let db2 = shared.fresh_database()?;
    assert_ne!(db1, db2);
    assert_eq!(shared.psql("postgres", "select 1")?.trim(), "1");
    // Still up a moment later (the watchdog only acts once this process is gone).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(TcpStream::connect(("127.0.0.1", shared.port())).is_ok());
    Ok(())
}
