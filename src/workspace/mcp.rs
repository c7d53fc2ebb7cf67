//! `pipeline mcp`: a Model Context Protocol server on stdio, so an AI agent (Claude Code, any MCP
//! client) can list and describe the workspace's tables, read metric definitions, query locally
//! or on the server, and pull. The protocol subset it needs is small and written here by hand:
//! JSON-RPC 2.0 messages, one per line (`initialize`, `ping`, `tools/list`, `tools/call`;
//! notifications are accepted and never answered). Logs go to stderr, never stdout.

use super::client::Client;
use super::{credentials, database, pull, Workspace, WorkspaceError};
use serde_json::{json, Value};
use std::io::{BufRead, Write};

/// Protocol revisions this server speaks, newest first; a client asking for another gets the
/// newest (the spec's negotiation).
const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

/// Rows a `query` tool call returns unless it asks for fewer or more (at most [`MAX_ROWS`]).
const DEFAULT_ROWS: usize = 200;
const MAX_ROWS: usize = 10_000;

pub struct McpServer {
    ws: Workspace,
    /// `--server` given to `pipeline mcp`, else the workspace's own server.
    server: Option<String>,
}

impl McpServer {
    pub fn new(ws: Workspace, server: Option<String>) -> McpServer {
        McpServer { ws, server }
    }

    /// Serves requests from `input` until it ends.
    pub fn serve(&self, input: impl BufRead, mut output: impl Write) -> std::io::Result<()> {
        for line in input.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            if let Some(answer) = self.handle_line(&line) {
                writeln!(output, "{answer}")?;
                output.flush()?;
            }
        }
        Ok(())
    }

    /// The answer to one message, or `None` for a notification.
    pub fn handle_line(&self, line: &str) -> Option<Value> {
        let msg: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
        };
        let Some(obj) = msg.as_object() else {
            return Some(error(Value::Null, -32600, "a request is a JSON object"));
        };
        let method = obj.get("method").and_then(Value::as_str);
        let Some(id) = obj.get("id").cloned() else {
            // A notification (`notifications/initialized`, `notifications/cancelled`…) or a
            // response to nothing we asked: no answer.
            return None;
        };
        let Some(method) = method else {
            return Some(error(id, -32600, "the request has no method"));
        };
        let params = obj.get("params").cloned().unwrap_or(Value::Null);
        let result = match method {
            "initialize" => Ok(self.initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({ "tools": tools() })),
            "tools/call" => self.call(&params),
            other => Err((-32601, format!("method `{other}` is not supported"))),
        };
        Some(match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err((code, message)) => error(id, code, &message),
        })
    }

    fn initialize(&self, params: &Value) -> Value {
        let asked = params["protocolVersion"].as_str().unwrap_or_default();
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&PROTOCOL_VERSIONS[0]);
        json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "pipeline", "version": env!("CARGO_PKG_VERSION")},
            "instructions": "Company data from a pipeline workspace. Use list_tables and describe_table \
                to find data, list_metrics and show_metric for business metrics: always use a metric's \
                canonical SQL, never invent a definition. query runs DuckDB SQL locally; pass \
                server=true for remote tables. pull refreshes the local copy."
        })
    }

    fn call(&self, params: &Value) -> Result<Value, (i64, String)> {
        let name = params["name"]
            .as_str()
            .ok_or((-32602, "tools/call needs a tool `name`".to_string()))?;
        let args = params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let outcome = match name {
            "list_tables" => self.list_tables(),
            "describe_table" => self.describe_table(&args),
            "list_metrics" => self.list_metrics(),
            "show_metric" => self.show_metric(&args),
            "query" => self.query(&args),
            "pull" => self.pull(),
            other => return Err((-32602, format!("unknown tool `{other}`"))),
        };
        // Tool failures are results the model can read and act on, not protocol errors.
        Ok(match outcome {
            Ok(v) => json!({
                "content": [{"type": "text", "text": serde_json::to_string_pretty(&v).unwrap_or_default()}],
                "structuredContent": v,
                "isError": false
            }),
            Err(e) => json!({
                "content": [{"type": "text", "text": crate::redact::redact(&e.to_string())}],
                "isError": true
            }),
        })
    }

    fn client(&self) -> Result<Client, WorkspaceError> {
        let server = match &self.server {
            Some(s) => Some(s.clone()),
            None => self.ws.load()?.map(|s| s.server),
        };
        Ok(Client::new(credentials::resolve(server.as_deref())?))
    }

    fn list_tables(&self) -> Result<Value, WorkspaceError> {
        let st = self.ws.require()?;
        let tables: Vec<Value> = st
            .tables
            .iter()
            .map(|t| {
                json!({"name": t.name, "source": t.source, "description": t.description,
                       "location": "local", "rows": t.freshness.rows,
                       "last_sync": t.freshness.last_sync})
            })
            .chain(st.remote_tables.iter().map(|t| {
                json!({"name": t.name, "source": t.source, "description": t.description,
                       "location": "remote (query with server=true)"})
            }))
            .collect();
        let transforms: Vec<Value> = st
            .transforms
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "inputs": t.inputs}))
            .collect();
        Ok(json!({"tables": tables, "transforms": transforms}))
    }

    fn describe_table(&self, args: &Value) -> Result<Value, WorkspaceError> {
        let name = args["name"]
            .as_str()
            .ok_or_else(|| WorkspaceError::Invalid("describe_table needs `name`".into()))?;
        let st = self.ws.require()?;
        if let Some(t) = st
            .remote_tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
        {
            return Ok(
                json!({"name": t.name, "source": t.source, "description": t.description,
                "location": "remote: query it with server=true", "columns": t.columns}),
            );
        }
        let conn = database::open(&self.ws)?;
        let mut stmt = conn.prepare(
            "SELECT column_name, data_type, comment FROM duckdb_columns()
             WHERE database_name = current_database() AND schema_name = 'main'
               AND lower(table_name) = lower(?) ORDER BY column_index",
        )?;
        let columns: Vec<Value> = stmt
            .query_map([name], |r| {
                Ok(
                    json!({"name": r.get::<_, String>(0)?, "type": r.get::<_, String>(1)?,
                          "description": r.get::<_, Option<String>>(2)?}),
                )
            })?
            .collect::<Result<_, _>>()?;
        if let Some(t) = st.tables.iter().find(|t| t.name.eq_ignore_ascii_case(name)) {
            return Ok(
                json!({"name": t.name, "source": t.source, "description": t.description,
                "location": "local", "rows": t.freshness.rows, "last_sync": t.freshness.last_sync,
                "columns": columns}),
            );
        }
        if let Some(t) = st
            .transforms
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
        {
            return Ok(
                json!({"name": t.name, "description": t.description, "kind": "transform",
                "inputs": t.inputs, "sql": t.sql, "columns": columns}),
            );
        }
        Err(WorkspaceError::Invalid(format!(
            "no table `{name}` in this workspace; list_tables lists them"
        )))
    }

    fn list_metrics(&self) -> Result<Value, WorkspaceError> {
        let st = self.ws.require()?;
        let list: Vec<Value> = st
            .metrics
            .iter()
            .map(|m| {
                json!({"id": m["id"], "display_name": m["display_name"],
                       "description": m["description"], "unit": m["unit"],
                       "synonyms": m["synonyms"]})
            })
            .collect();
        Ok(json!({"metrics": list}))
    }

    fn show_metric(&self, args: &Value) -> Result<Value, WorkspaceError> {
        let id = args["id"].as_str().ok_or_else(|| {
            WorkspaceError::Invalid("show_metric needs `id` (CATEGORY/NAME)".into())
        })?;
        let st = self.ws.require()?;
        st.metric(id).cloned().ok_or_else(|| {
            WorkspaceError::Invalid(format!("no metric `{id}`; list_metrics lists them"))
        })
    }

    fn query(&self, args: &Value) -> Result<Value, WorkspaceError> {
        let sql = args["sql"]
            .as_str()
            .ok_or_else(|| WorkspaceError::Invalid("query needs `sql`".into()))?;
        let max_rows = args["max_rows"]
            .as_u64()
            .map_or(DEFAULT_ROWS, |n| (n as usize).min(MAX_ROWS));
        if args["server"].as_bool().unwrap_or(false) {
            let answer = self.client()?.query(sql, Some(max_rows))?;
            let columns: Vec<Value> = answer
                .columns
                .iter()
                .map(|c| json!({"name": c.name, "type": c.data_type}))
                .collect();
            return Ok(json!({"columns": columns, "row_count": answer.rows.len(),
                             "rows": answer.rows, "truncated": answer.truncated,
                             "where": "server"}));
        }
        let conn = database::open(&self.ws)?;
        let mut v = database::query_json(&conn, sql, max_rows)?;
        v["where"] = json!("local");
        Ok(v)
    }

    fn pull(&self) -> Result<Value, WorkspaceError> {
        let report = pull::pull(&self.ws, &self.client()?, &pull::PullOptions::default())?;
        Ok(serde_json::to_value(report).unwrap_or_default())
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn tools() -> Value {
    let none = json!({"type": "object", "properties": {}});
    json!([
        {"name": "list_tables",
         "description": "Every table, remote table and transform you may read, with description, row count and last sync.",
         "inputSchema": none},
        {"name": "describe_table",
         "description": "One table's columns (name, type, description), freshness and whether it is local or remote.",
         "inputSchema": {"type": "object", "properties": {"name": {"type": "string", "description": "table or transform name"}}, "required": ["name"]}},
        {"name": "list_metrics",
         "description": "The canonical business metric definitions (id, name, description, unit, synonyms).",
         "inputSchema": none},
        {"name": "show_metric",
         "description": "One metric's full definition with its canonical SQL (a template: {{ grain }} is one of its grains). Use it; never invent a metric formula.",
         "inputSchema": {"type": "object", "properties": {"id": {"type": "string", "description": "CATEGORY/NAME"}}, "required": ["id"]}},
        {"name": "query",
         "description": "Run one DuckDB SQL query: locally on the workspace copy, or on the server with server=true (needed for remote tables). Returns columns and rows.",
         "inputSchema": {"type": "object", "properties": {
             "sql": {"type": "string"},
             "server": {"type": "boolean", "description": "run on the server instead of the local copy", "default": false},
             "max_rows": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": DEFAULT_ROWS}},
          "required": ["sql"]}},
        {"name": "pull",
         "description": "Refresh the local copy from the server (downloads only what changed).",
         "inputSchema": none}
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> (tempfile::TempDir, McpServer) {
        let dir = tempfile::tempdir().unwrap();
        let s = McpServer::new(Workspace::at(dir.path()), Some("http://127.0.0.1:1".into()));
        (dir, s)
    }

    fn ask(s: &McpServer, msg: Value) -> Value {
        s.handle_line(&msg.to_string()).expect("an answer")
    }

    #[test]
    fn the_protocol_subset() {
        let (_d, s) = server();
        let init = ask(
            &s,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"protocolVersion": "2024-11-05"}}),
        );
        assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
        let newer = ask(
            &s,
            json!({"jsonrpc": "2.0", "id": "x", "method": "initialize",
                   "params": {"protocolVersion": "2099-01-01"}}),
        );
        assert_eq!(newer["id"], "x");
        assert_eq!(newer["result"]["protocolVersion"], PROTOCOL_VERSIONS[0]);
        assert!(s
            .handle_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .is_none());
        assert_eq!(s.handle_line("{oops").unwrap()["error"]["code"], -32700);
        assert_eq!(s.handle_line("[1]").unwrap()["error"]["code"], -32600);
        let unknown = ask(&s, json!({"jsonrpc": "2.0", "id": 2, "method": "nope"}));
        assert_eq!(unknown["error"]["code"], -32601);
        let bad_tool = ask(
            &s,
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm"}}),
        );
        assert_eq!(bad_tool["error"]["code"], -32602);
        let tools = ask(
            &s,
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}),
        );
        for t in tools["result"]["tools"].as_array().unwrap() {
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert!(t["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }

    /// Tool failures are results with `isError`, saying what to do; an unreachable server too.
    #[test]
    fn tool_failures_are_readable_results() {
        let (_d, s) = server();
        let call = |name: &str, args: Value| {
            ask(
                &s,
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": name, "arguments": args}}),
            )["result"]
                .clone()
        };
        let r = call("list_tables", json!({}));
        assert_eq!(r["isError"], true);
        assert!(r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("pipeline pull"));
        let r = call("describe_table", json!({}));
        assert!(r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("needs `name`"));
        let r = call("query", json!({"sql": "select 1", "server": true}));
        assert_eq!(r["isError"], true, "{r}");
    }
}
