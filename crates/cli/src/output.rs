//! Human or JSON output. Errors go to stderr either way; with `--json` as `{"error": …}`.
//! Results are typed: the server's `wire` bodies, or the CLI's own report types.

use serde::Serialize;

pub struct Output {
    json: bool,
}

/// An error as `--json` prints it: the whole chain in `error`, and for a refusal or failure
/// the server reported, its stable `code`, HTTP `status` and the server's `message`, so a
/// script can branch on the code instead of parsing text.
#[derive(Serialize)]
struct ErrorReport {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints a result: the value as JSON with `--json`, otherwise the human text.
    pub fn result<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(value)?);
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Ok(())
    }

    /// Prints a value as one line of JSON (for results with output of their own).
    pub fn json_line<T: Serialize>(&self, value: &T) {
        match serde_json::to_string(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("custody: error: printing the result: {e}"),
        }
    }

    pub fn error(&self, error: &anyhow::Error) {
        if self.json {
            let server = error
                .chain()
                .find_map(|e| e.downcast_ref::<crate::client::ServerError>());
            let report = ErrorReport {
                error: format!("{error:#}"),
                code: server.map(|e| e.code.to_string()),
                status: server.map(|e| e.status.as_u16()),
                message: server.map(|e| e.message.clone()),
            };
            match serde_json::to_string(&report) {
                Ok(text) => eprintln!("{text}"),
                Err(_) => eprintln!("custody: error: {error:#}"),
            }
        } else {
            eprintln!("custody: error: {error:#}");
        }
    }
}

/// One line per item.
pub fn lines<T>(items: &[T], line: impl Fn(&T) -> String) -> String {
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// Logs to stderr, filtered by `CUSTODY_LOG` (default `info`): for the long-running commands.
pub fn init_logging() {
    init_logging_as(false);
}

/// Like [`init_logging`]; `json`: one JSON object a line (timestamp, level, target, the
/// event's fields flattened, and the request span's fields under `span`), for log pipelines.
/// Text has colour only when stderr is a terminal (and `NO_COLOR` is not set), so files and
/// the journal get plain text.
pub fn init_logging_as(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTODY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        builder.with_ansi(colour).init();
    }
}
