//! Atlassian Document Format (ADF) → plain text, for the text columns of the Jira tables
//! (issue descriptions, comment bodies, textarea custom fields).
//!
//! ADF is a JSON tree: block nodes (`paragraph`, `heading`, `bulletList`, `codeBlock`, `table`,
//! `panel`…) hold inline nodes (`text` with marks, `mention`, `emoji`, `inlineCard`, `status`,
//! `date`…). Links live outside the text: in `inlineCard` / `blockCard` / `embedCard` attributes and
//! in `link` marks on text nodes. They are what an analyst most often needs from a ticket, so they
//! are kept: a linked text becomes `text (https://…)`, or the URL alone when the text is the URL;
//! a card becomes its URL. Media become a placeholder with the file name (`[attachment: log.txt]`).
//!
//! The output is stable (the same document always gives the same text) and never fails: a node
//! type this module does not know is rendered by descending into its `content`, so a new Atlassian
//! node loses at most its decoration. Who calls it: [`super::rows`], while mapping an issue.

use serde_json::Value;

/// Plain text of a rich-text field value: an ADF document, or already a string (the v2 API and
/// some custom fields send wiki markup or plain text). `None` for null and for empty documents.
pub fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()).filter(|s| !s.is_empty()),
        Value::Object(_) => Some(to_text(value)).filter(|s| !s.is_empty()),
        other => Some(other.to_string()),
    }
}

/// The plain text of an ADF document (or of any ADF node).
pub fn to_text(doc: &Value) -> String {
    let text = render_block(doc).unwrap_or_default();
    // Trailing spaces and blank lines at the ends carry nothing.
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').to_string()
}

fn kind(node: &Value) -> &str {
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

fn attr<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    node.get("attrs").and_then(|a| a.get(name))
}

fn attr_str<'a>(node: &'a Value, name: &str) -> Option<&'a str> {
    attr(node, name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn children(node: &Value) -> &[Value] {
    node.get("content")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Node types rendered inline (inside a line). Every other type is a block, or an unknown node
/// rendered by its children.
fn is_inline(kind: &str) -> bool {
    matches!(
        kind,
        "text"
            | "hardBreak"
            | "mention"
            | "emoji"
            | "inlineCard"
            | "status"
            | "date"
            | "mediaInline"
            | "placeholder"
            | "inlineExtension"
    )
}

/// A block node as text (lines separated by `\n`); `None` when it renders to nothing.
fn render_block(node: &Value) -> Option<String> {
    let text = match kind(node) {
        "paragraph" | "heading" => inline(children(node)),
        "bulletList" => list(node, |_| "- ".to_string()),
        "orderedList" => {
            let start = attr(node, "order").and_then(Value::as_i64).unwrap_or(1);
            list(node, move |i| format!("{}. ", start + i as i64))
        }
        "taskList" | "decisionList" => lines_of(children(node)),
        "taskItem" => {
            let done = attr_str(node, "state") == Some("DONE");
            let body = mixed(children(node));
            format!("[{}] {body}", if done { "x" } else { " " })
        }
        "decisionItem" => format!("- {}", mixed(children(node))),
        "codeBlock" => children(node)
            .iter()
            .filter_map(|t| t.get("text").and_then(Value::as_str))
            .collect(),
        "blockquote" => prefixed(&lines_of(children(node)), "> "),
        "table" => children(node)
            .iter()
            .map(table_row)
            .filter(|r| !r.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        "rule" => "---".to_string(),
        "media" => media(node),
        "blockCard" | "embedCard" => card(node).unwrap_or_default(),
        "expand" | "nestedExpand" => {
            let body = lines_of(children(node));
            match attr_str(node, "title") {
                Some(title) if body.is_empty() => title.to_string(),
                Some(title) => format!("{title}\n{body}"),
                None => body,
            }
        }
        // doc, panel, mediaSingle, mediaGroup, layoutSection, layoutColumn, bodiedExtension, and
        // every type not known here: their children, blocks on their own lines.
        k if is_inline(k) => inline(std::slice::from_ref(node)),
        _ => mixed(children(node)),
    };
    (!text.trim().is_empty()).then_some(text)
}

/// Children that may be blocks or inline nodes (robust to unknown containers): runs of inline
/// nodes form one line; blocks stand on their own lines.
fn mixed(nodes: &[Value]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<Value> = Vec::new();
    let flush = |run: &mut Vec<Value>, out: &mut Vec<String>| {
        if !run.is_empty() {
            let line = inline(run);
            if !line.trim().is_empty() {
                out.push(line);
            }
            run.clear();
        }
    };
    for node in nodes {
        if is_inline(kind(node)) {
            run.push(node.clone());
        } else {
            flush(&mut run, &mut out);
            if let Some(block) = render_block(node) {
                out.push(block);
            }
        }
    }
    flush(&mut run, &mut out);
    out.join("\n")
}

fn lines_of(nodes: &[Value]) -> String {
    nodes
        .iter()
        .filter_map(render_block)
        .collect::<Vec<_>>()
        .join("\n")
}

fn prefixed(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A bullet or numbered list: each item's first line after its marker, its other lines (nested
/// lists, second paragraphs) indented under it.
fn list(node: &Value, marker: impl Fn(usize) -> String) -> String {
    children(node)
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let body = mixed(children(item));
            if body.trim().is_empty() {
                return None;
            }
            let m = marker(i);
            let indent = " ".repeat(m.chars().count());
            let mut lines = body.lines();
            let first = lines.next().unwrap_or_default();
            let mut text = format!("{m}{first}");
            for line in lines {
                text.push('\n');
                text.push_str(&indent);
                text.push_str(line);
            }
            Some(text)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table row: its cells' text joined by ` | ` (a cell's own line breaks become spaces).
fn table_row(row: &Value) -> String {
    children(row)
        .iter()
        .map(|cell| {
            mixed(children(cell))
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" | ")
        .trim()
        .to_string()
}

/// Inline nodes as one piece of text. Adjacent text nodes linking to the same URL (a link with a
/// bold word inside is several text nodes) are joined before the URL is added, so it appears once.
fn inline(nodes: &[Value]) -> String {
    let mut out = String::new();
    let mut link: Option<(String, String)> = None; // (href, text so far)
    let close = |link: &mut Option<(String, String)>, out: &mut String| {
        if let Some((href, text)) = link.take() {
            out.push_str(&linked(&text, &href));
        }
    };
    for node in nodes {
        if kind(node) == "text" {
            let text = node.get("text").and_then(Value::as_str).unwrap_or("");
            match link_href(node) {
                Some(href) => match &mut link {
                    Some((h, t)) if *h == href => t.push_str(text),
                    _ => {
                        close(&mut link, &mut out);
                        link = Some((href, text.to_string()));
                    }
                },
                None => {
                    close(&mut link, &mut out);
                    out.push_str(text);
                }
            }
            continue;
        }
        close(&mut link, &mut out);
        match kind(node) {
            "hardBreak" => out.push('\n'),
            "mention" => {
                let name = attr_str(node, "text").or_else(|| attr_str(node, "id"));
                if let Some(name) = name {
                    if !name.starts_with('@') {
                        out.push('@');
                    }
                    out.push_str(name);
                }
            }
            "emoji" => {
                if let Some(e) = attr_str(node, "text").or_else(|| attr_str(node, "shortName")) {
                    out.push_str(e);
                }
            }
            "inlineCard" => {
                if let Some(url) = card(node) {
                    out.push_str(&url);
                }
            }
            "status" => {
                if let Some(text) = attr_str(node, "text") {
                    out.push_str(&format!("[{text}]"));
                }
            }
            "date" => {
                if let Some(day) = attr(node, "timestamp").and_then(date_of) {
                    out.push_str(&day);
                }
            }
            "mediaInline" => out.push_str(&media(node)),
            "placeholder" => {}
            // inlineExtension and unknown inline nodes: their text, if they have any.
            _ => {
                if let Some(text) = attr_str(node, "text") {
                    out.push_str(text);
                } else {
                    out.push_str(&inline(children(node)));
                }
            }
        }
    }
    close(&mut link, &mut out);
    out
}

fn link_href(text_node: &Value) -> Option<String> {
    text_node
        .get("marks")?
        .as_array()?
        .iter()
        .find(|m| kind(m) == "link")
        .and_then(|m| attr_str(m, "href"))
        .map(str::to_string)
}

/// `text (url)`, or the URL alone when the text says nothing more.
fn linked(text: &str, href: &str) -> String {
    let t = text.trim();
    if t.is_empty() || t == href || t.trim_end_matches('/') == href.trim_end_matches('/') {
        href.to_string()
    } else {
        format!("{text} ({href})")
    }
}

/// A card's URL (`attrs.url`), or from its JSON-LD `attrs.data` (`url`, with `name` when given).
fn card(node: &Value) -> Option<String> {
    if let Some(url) = attr_str(node, "url") {
        return Some(url.to_string());
    }
    let data = attr(node, "data")?;
    let url = data.get("url").and_then(Value::as_str)?;
    Some(match data.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() && name != url => format!("{name} ({url})"),
        _ => url.to_string(),
    })
}

/// `[attachment: <file name>]` (the name is in `alt`), the URL of an external image, or `[media]`.
fn media(node: &Value) -> String {
    if let Some(name) = attr_str(node, "alt") {
        return format!("[attachment: {name}]");
    }
    if attr_str(node, "type") == Some("external") {
        if let Some(url) = attr_str(node, "url") {
            return format!("[image: {url}]");
        }
    }
    "[media]".to_string()
}

/// A `date` node's day, UTC (`timestamp` is milliseconds since the epoch, as a string or number).
fn date_of(ts: &Value) -> Option<String> {
    let ms = match ts {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(content: Value) -> Value {
        json!({"type": "doc", "version": 1, "content": content})
    }

    fn p(content: Value) -> Value {
        json!({"type": "paragraph", "content": content})
    }

    fn t(text: &str) -> Value {
        json!({"type": "text", "text": text})
    }

    #[test]
    fn adf_links_survive_as_text_and_url() {
        let d = doc(json!([p(json!([
            t("See "),
            {"type": "text", "text": "the runbook", "marks": [{"type": "link", "attrs": {"href": "https://wiki.example.com/run"}}]},
            t(" and "),
            {"type": "text", "text": "https://example.com/x", "marks": [{"type": "link", "attrs": {"href": "https://example.com/x"}}]},
            t(", also "),
            {"type": "inlineCard", "attrs": {"url": "https://acme.atlassian.net/browse/OPS-7"}},
        ])), {"type": "blockCard", "attrs": {"url": "https://github.com/acme/app/pull/42"}},
           {"type": "embedCard", "attrs": {"url": "https://figma.com/file/abc", "layout": "center"}}]));
        assert_eq!(
            to_text(&d),
            "See the runbook (https://wiki.example.com/run) and https://example.com/x, also \
             https://acme.atlassian.net/browse/OPS-7\nhttps://github.com/acme/app/pull/42\n\
             https://figma.com/file/abc"
        );
    }

    #[test]
    fn adf_a_link_split_over_marked_text_nodes_is_named_once() {
        let link = json!({"type": "link", "attrs": {"href": "https://x.io/a"}});
        let d = doc(json!([p(json!([
            {"type": "text", "text": "read ", "marks": [link]},
            {"type": "text", "text": "this", "marks": [{"type": "strong"}, link]},
            t(" now"),
        ]))]));
        assert_eq!(to_text(&d), "read this (https://x.io/a) now");
    }

    #[test]
    fn adf_inline_cards_from_json_ld_data_keep_their_url() {
        let d = doc(json!([p(
            json!([{"type": "inlineCard", "attrs": {"data": {
            "@type": "Document", "name": "Spec", "url": "https://docs.example.com/spec"}}}])
        )]));
        assert_eq!(to_text(&d), "Spec (https://docs.example.com/spec)");
    }

    /// A realistic bug report, as Jira's editor stores it.
    #[test]
    fn adf_realistic_description_renders_every_structure() {
        let d = json!({"type": "doc", "version": 1, "content": [
            {"type": "heading", "attrs": {"level": 2}, "content": [t("Steps")]},
            {"type": "orderedList", "attrs": {"order": 1}, "content": [
                {"type": "listItem", "content": [p(json!([t("Open the app")]))]},
                {"type": "listItem", "content": [
                    p(json!([t("Click "), {"type": "text", "text": "Pay", "marks": [{"type": "code"}]}])),
                    {"type": "bulletList", "content": [
                        {"type": "listItem", "content": [p(json!([t("on mobile")]))]}
                    ]}
                ]}
            ]},
            p(json!([
                {"type": "mention", "attrs": {"id": "5b10ac8d82e05b22cc7d4ef5", "text": "@Jane Doe", "accessLevel": ""}},
                t(" please look "),
                {"type": "emoji", "attrs": {"shortName": ":fire:", "id": "1f525", "text": "🔥"}},
                {"type": "hardBreak"},
                t("status "),
                {"type": "status", "attrs": {"text": "Blocked", "color": "red"}},
                t(" since "),
                {"type": "date", "attrs": {"timestamp": "1704067200000"}}
            ])),
            {"type": "codeBlock", "attrs": {"language": "text"}, "content": [t("Error: 500\n  at pay()")]},
            {"type": "blockquote", "content": [p(json!([t("customer said so")]))]},
            {"type": "panel", "attrs": {"panelType": "warning"}, "content": [p(json!([t("Production only")]))]},
            {"type": "table", "content": [
                {"type": "tableRow", "content": [
                    {"type": "tableHeader", "content": [p(json!([t("Env")]))]},
                    {"type": "tableHeader", "content": [p(json!([t("Result")]))]}
                ]},
                {"type": "tableRow", "content": [
                    {"type": "tableCell", "content": [p(json!([t("prod")]))]},
                    {"type": "tableCell", "content": [p(json!([t("fails")]))]}
                ]}
            ]},
            {"type": "mediaSingle", "attrs": {"layout": "center"}, "content": [
                {"type": "media", "attrs": {"id": "abc-123", "type": "file", "collection": "", "alt": "screenshot.png"}}
            ]},
            {"type": "rule"},
            {"type": "taskList", "attrs": {"localId": "x"}, "content": [
                {"type": "taskItem", "attrs": {"localId": "a", "state": "DONE"}, "content": [t("reproduce")]},
                {"type": "taskItem", "attrs": {"localId": "b", "state": "TODO"}, "content": [t("fix")]}
            ]}
        ]});
        assert_eq!(
            to_text(&d),
            "Steps\n\
             1. Open the app\n\
             2. Click Pay\n   - on mobile\n\
             @Jane Doe please look 🔥\nstatus [Blocked] since 2024-01-01\n\
             Error: 500\n  at pay()\n\
             > customer said so\n\
             Production only\n\
             Env | Result\nprod | fails\n\
             [attachment: screenshot.png]\n\
             ---\n\
             [x] reproduce\n[ ] fix"
        );
    }

    #[test]
    fn adf_unknown_nodes_are_descended_into() {
        let d = doc(json!([
            {"type": "someFutureBlock", "attrs": {"x": 1}, "content": [
                p(json!([t("inside a new block")])),
                {"type": "someFutureInline", "content": [t("loose inline text")]}
            ]},
            p(json!([t("a "), {"type": "brandNewInline", "attrs": {"text": "thing"}}, t(" here")]))
        ]));
        assert_eq!(
            to_text(&d),
            "inside a new block\nloose inline text\na thing here"
        );
    }

    #[test]
    fn adf_mentions_without_a_text_and_external_media() {
        let d = doc(json!([p(json!([
            {"type": "mention", "attrs": {"id": "abc", "text": "Bob"}},
            t(" "),
            {"type": "mention", "attrs": {"id": "557058:xyz"}},
        ])), {"type": "mediaSingle", "content": [
            {"type": "media", "attrs": {"type": "external", "url": "https://img.example.com/a.png"}}]},
           {"type": "mediaGroup", "content": [{"type": "media", "attrs": {"type": "file", "id": "q"}}]}]));
        assert_eq!(
            to_text(&d),
            "@Bob @557058:xyz\n[image: https://img.example.com/a.png]\n[media]"
        );
    }

    #[test]
    fn adf_field_values_of_every_shape() {
        assert_eq!(field_text(&Value::Null), None);
        assert_eq!(
            field_text(&json!("plain *wiki*")),
            Some("plain *wiki*".into())
        );
        assert_eq!(field_text(&doc(json!([]))), None);
        assert_eq!(field_text(&doc(json!([p(json!([]))]))), None);
        assert_eq!(
            field_text(&doc(json!([p(json!([t("x")]))]))),
            Some("x".into())
        );
    }
}
