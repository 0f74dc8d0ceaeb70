use std::net::TcpStream;

use testkit::MotoServer;

#[test]
fn moto_makes_buckets_and_stops_on_drop() -> Result<(), String> {
    let moto = MotoServer::start()?;
    let port = moto.port();
    assert_eq!(moto.url(), format!("http://127.0.0.1:{port}"));
    moto.create_bucket("plain", false)?;
    moto.create_bucket("versioned", true)?;
    assert!(
        moto.create_bucket("Bad_Name", false).is_err(),
        "invalid bucket names are refused before any request"
    );
    let a = moto.fresh_bucket(true)?;
    let b = moto.fresh_bucket(false)?;
    assert_ne!(a, b);

    drop(moto);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after drop"
    );
    Ok(())
}

#[test]
fn shared_moto_is_started_once() -> Result<(), String> {
    let first = MotoServer::shared()?.url();
    let second = MotoServer::shared()?.url();
    assert_eq!(first, second);
    Ok(())
}
