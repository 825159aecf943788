//! How client commands print: tables for people, JSON for programs (`--output json`), one
//! stdout writer that ends the process quietly when the reader goes away (`| head`), and
//! colour only for a terminal without `NO_COLOR`.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;

/// `--output` of listing and describe commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document, for programs.
    Json,
}

/// Write one line to stdout. A closed stdout (the reader exited, as `head` does) ends the
/// process with status 0 and nothing on stderr; any other write error is reported on one line.
pub fn line(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(text).and_then(|()| out.write_all(b"\n"));
    if let Err(e) = written.and_then(|()| out.flush()) {
        stdout_failed(e);
    }
}

/// What to do when writing to stdout failed: quiet exit on a broken pipe, else one line.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1);
}

/// `println!` for client commands: see [`line`].
macro_rules! outln {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}

/// Print `value` as pretty JSON on stdout.
pub fn json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    line(format_args!("{text}"));
}

/// Whether stdout gets ANSI colour: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// `text` in bold red when colour is on (warnings in tables: under-replicated, offline).
pub fn alert(text: &str) -> String {
    if color() {
        format!("\x1b[1;31m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A table printed with each column as wide as its widest cell. Cells may carry ANSI colour;
/// widths count visible characters only.
pub struct Table {
    headers: Vec<String>,
    /// Right-align these columns (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns by header; a header starting with `>` is right-aligned (the `>` is dropped).
    pub fn new(headers: &[&'static str]) -> Table {
        Table::with_headers(headers.iter().map(|h| h.to_string()).collect())
    }

    /// [`Table::new`] with headers made at run time (e.g. one column per rack).
    pub fn with_headers(headers: Vec<String>) -> Table {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers
                .iter()
                .map(|h| h.trim_start_matches('>').to_string())
                .collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// The table as lines (header first), columns separated by two spaces.
    pub fn render(&self) -> Vec<String> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(visible_len(cell));
            }
        }
        let fmt = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate() {
                let pad = widths[i].saturating_sub(visible_len(cell));
                let last = i + 1 == widths.len();
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            line
        };
        let mut out = vec![fmt(&mut self.headers.iter().map(String::as_str))];
        for row in &self.rows {
            out.push(fmt(&mut row.iter().map(String::as_str)));
        }
        out
    }

    pub fn print(&self) {
        for l in self.render() {
            line(format_args!("{l}"));
        }
    }
}

/// Characters a terminal shows: ANSI escape sequences (`ESC [ ... m`) take no room.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(&["NAME", ">COUNT", "NOTE"]);
        t.row(vec!["a".into(), "1".into(), "x".into()]);
        t.row(vec!["longer".into(), "12345".into(), "y".into()]);
        assert_eq!(
            t.render(),
            vec![
                "NAME    COUNT  NOTE",
                "a           1  x",
                "longer  12345  y"
            ]
        );
    }

    #[test]
    fn escapes_take_no_width() {
        assert_eq!(visible_len("\x1b[1;31mURP\x1b[0m"), 3);
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["\x1b[1;31mx\x1b[0m".into(), "y".into()]);
        assert_eq!(t.render()[1], "\x1b[1;31mx\x1b[0m  y");
    }
}
