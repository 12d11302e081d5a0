//! The interactive shell: multi-line statements ending in `;`, history, timing, `\d`.

use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use shoal::Session;
use shoal::datafusion::arrow::array::RecordBatch;

use crate::output::{self, Format};
use crate::statement::run_statement;

const HELP: &str = "Statements end with ';'. \\d lists tables, \\d NAME describes one, \\q quits, Ctrl-C cancels a running query.";

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".shoal_history"))
}

async fn run_text(session: &Session, text: &str, format: Format) {
    let statements = match session.parse(text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {e}");
            return;
        }
    };
    for statement in statements {
        let started = Instant::now();
        match run_statement(session, statement).await {
            Ok((schema, batches)) => {
                let mut out = std::io::stdout();
                if let Err(e) = output::write(&mut out, format, &schema, &batches) {
                    eprintln!("Error: {e}");
                }
                println!("{}", summary(&batches, started));
            }
            Err(e) => {
                eprintln!("Error: {e}");
                return;
            }
        }
    }
}

async fn backslash(session: &Session, command: &str, format: Format) -> bool {
    let mut parts = command.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("\\q"), _) => return false,
        (Some("\\d"), None) => {
            for name in session.table_names() {
                println!("{name}");
            }
        }
        (Some("\\d"), Some(table)) => run_text(session, &format!("describe {table}"), format).await,
        _ => println!("{HELP}"),
    }
    true
}

/// Runs the shell until `\q` or end of input.
pub async fn run(session: &Session, format: Format) -> shoal::Result<()> {
    let mut editor = DefaultEditor::new()
        .map_err(|e| shoal::Error::input(format!("cannot start the shell: {e}")))?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("Shoal {} (embedded). {HELP}", env!("CARGO_PKG_VERSION"));
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "shoal> "
        } else {
            "   ..> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('\\') {
                    let _ = editor.add_history_entry(trimmed);
                    if !backslash(session, trimmed, format).await {
                        break;
                    }
                    continue;
                }
                if trimmed.is_empty() && buffer.is_empty() {
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    let text = std::mem::take(&mut buffer);
                    let _ = editor.add_history_entry(text.trim());
                    run_text(session, &text, format).await;
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(shoal::Error::input(format!("shell input failed: {e}"))),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// "N rows in 0.123 s" for the shell.
fn summary(batches: &[RecordBatch], started: Instant) -> String {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let noun = if rows == 1 { "row" } else { "rows" };
    format!("{rows} {noun} in {:.3} s", started.elapsed().as_secs_f64())
}
