//! Histories in EDN, the form Jepsen writes and Elle's command-line checker (`elle-cli`) and
//! Knossos read, so that outside tools can check what `rangekv verify` recorded.
//!
//! One event becomes one op map a line, as in a Jepsen `history.edn`:
//!
//! ```text
//! {:index 7, :time 120400, :type :ok, :process 3, :f :txn, :value [[:append "x" 1] [:r "y" [1 2]]]}
//! ```
//!
//! Rules: `type` and `f` become keywords; JSON arrays become vectors, objects maps with
//! keyword keys, `null` becomes `nil`; strings and numbers stay as they are. In a transaction
//! (`f` = `txn`, Elle's list-append and rw-register) the first element of every
//! micro-operation (`append`, `r`, `w`) is a keyword. Register keys and values (`["r/0", 2]`)
//! are `[key value]` tuples, as Jepsen's independent checker writes them.
//!
//! Pure: no IO; the caller writes the lines.

use std::fmt::Write as _;

use serde_json::Value;

use crate::history::{Event, Type};

/// The EDN op map of `event`, on one line.
pub fn event_line(event: &Event) -> String {
    let mut out = String::with_capacity(128);
    let kind = match event.kind {
        Type::Invoke => "invoke",
        Type::Ok => "ok",
        Type::Fail => "fail",
        Type::Info => "info",
    };
    let _ = write!(
        out,
        "{{:index {}, :time {}, :type :{kind}, :process {}, :f {}, :value ",
        event.index,
        event.time,
        event.process,
        keyword(&event.f)
    );
    if event.f == "txn" {
        txn_value(&event.value, &mut out);
    } else {
        value(&event.value, &mut out);
    }
    if let Some(e) = &event.error {
        out.push_str(", :error ");
        string(e, &mut out);
    }
    out.push('}');
    out
}

/// A keyword for `name`: characters EDN does not allow in a symbol become `-`.
fn keyword(name: &str) -> String {
    let body: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "*+!-_?<>=./".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if body.is_empty() || body.starts_with(|c: char| c.is_ascii_digit()) {
        format!(":_{body}")
    } else {
        format!(":{body}")
    }
}

/// A list of micro-operations, each `[f key value]` with `f` a keyword.
fn txn_value(v: &Value, out: &mut String) {
    let Value::Array(mops) = v else {
        return value(v, out);
    };
    out.push('[');
    for (i, mop) in mops.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match mop {
            Value::Array(parts) if matches!(parts.first(), Some(Value::String(_))) => {
                out.push('[');
                out.push_str(&keyword(parts[0].as_str().expect("checked")));
                for p in &parts[1..] {
                    out.push(' ');
                    value(p, out);
                }
                out.push(']');
            }
            other => value(other, out),
        }
    }
    out.push(']');
}

fn value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&keyword(k));
                out.push(' ');
                value(item, out);
            }
            out.push('}');
        }
    }
}

fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: Type, f: &str, value: Value, error: Option<&str>) -> Event {
        Event {
            index: 7,
            process: 3,
            kind,
            f: f.into(),
            value,
            time: 120400,
            error: error.map(Into::into),
        }
    }

    #[test]
    fn list_append_transactions_become_elle_ops() {
        let e = event(
            Type::Ok,
            "txn",
            json!([["append", "x", 1], ["r", "y", [1, 2]], ["r", "z", null]]),
            None,
        );
        assert_eq!(
            event_line(&e),
            r#"{:index 7, :time 120400, :type :ok, :process 3, :f :txn, :value [[:append "x" 1] [:r "y" [1 2]] [:r "z" nil]]}"#
        );
    }

    #[test]
    fn register_ops_keep_key_value_tuples_and_errors() {
        let e = event(
            Type::Info,
            "cas",
            json!(["r/0", [1, 2]]),
            Some("write outcome \"undetermined\""),
        );
        assert_eq!(
            event_line(&e),
            r#"{:index 7, :time 120400, :type :info, :process 3, :f :cas, :value ["r/0" [1 2]], :error "write outcome \"undetermined\""}"#
        );
        let invoke = event(Type::Invoke, "read", json!(["r/0", null]), None);
        assert!(event_line(&invoke)
            .contains(":type :invoke, :process 3, :f :read, :value [\"r/0\" nil]"));
    }

    #[test]
    fn objects_and_odd_names_stay_valid_edn() {
        let e = event(
            Type::Ok,
            "read all",
            json!({"balances": {"a": 5}, "ok": true}),
            None,
        );
        let line = event_line(&e);
        assert!(line.contains(":f :read-all"), "{line}");
        assert!(
            line.contains(":value {:balances {:a 5}, :ok true}"),
            "{line}"
        );
        assert_eq!(keyword("1st"), ":_1st");
        assert_eq!(keyword(""), ":_");
    }
}
