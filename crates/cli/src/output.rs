//! Human or JSON output. Errors go to stderr either way; with `--json` as `{"error": …}`.

use serde_json::Value;

pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints a result: the JSON value with `--json`, otherwise the human text.
    pub fn result(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }

    pub fn error(&self, error: &anyhow::Error) {
        if self.json {
            eprintln!("{}", serde_json::json!({ "error": format!("{error:#}") }));
        } else {
            eprintln!("custody: error: {error:#}");
        }
    }
}

pub fn lines(items: &Value, line: impl Fn(&Value) -> String) -> String {
    items
        .as_array()
        .map(|a| a.iter().map(line).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}
