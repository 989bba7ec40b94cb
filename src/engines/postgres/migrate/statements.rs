//! Splitting a script into statements with squawk's PostgreSQL parser, and mapping server error
//! positions back to lines. Scripts run one statement at a time, so a failure names its statement and
//! a no-transaction script (`CREATE INDEX CONCURRENTLY`) never becomes an implicit transaction.

use squawk_syntax::{SourceFile, SyntaxElement, SyntaxKind, SyntaxNode};

/// One statement of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text, with its terminating semicolon when it has one.
    pub text: String,
    /// Byte offset in the script where the statement starts.
    pub start: usize,
}

/// The script could not be split: the parser found a syntax error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitError {
    /// 1-based line in the script.
    pub line: usize,
    pub message: String,
}

/// Top-level pieces of a parsed script: `Ok(node)` for a statement, `Err(kind)` for a token.
fn top_level(root: &SyntaxNode) -> impl Iterator<Item = Result<SyntaxNode, SyntaxKind>> {
    root.children_with_tokens().map(|el| match el {
        SyntaxElement::Node(n) if n.kind() == SyntaxKind::EMPTY_STMT => Err(SyntaxKind::SEMICOLON),
        SyntaxElement::Node(n) => Ok(n),
        SyntaxElement::Token(t) => Err(t.kind()),
    })
}

/// Splits `sql` into its statements. A syntax error (as squawk's parser sees it) is an error: running
/// text we cannot delimit would risk running it wrongly.
pub fn split(sql: &str) -> Result<Vec<Statement>, SplitError> {
    let parse = SourceFile::parse(sql);
    if let Some(e) = parse.errors().first() {
        return Err(SplitError {
            line: line_of(sql, usize::from(e.range().start())),
            message: e.message().to_string(),
        });
    }
    let mut out = Vec::new();
    for piece in top_level(&parse.syntax_node()) {
        match piece {
            Ok(node) => {
                let range = node.text_range();
                let (start, end) = (usize::from(range.start()), usize::from(range.end()));
                out.push(Statement {
                    text: sql[start..end].to_string(),
                    start,
                });
            }
            Err(SyntaxKind::WHITESPACE | SyntaxKind::COMMENT | SyntaxKind::SEMICOLON) => {}
            Err(kind) => {
                return Err(SplitError {
                    line: 1,
                    message: format!("unexpected {kind:?} between statements"),
                });
            }
        }
    }
    Ok(out)
}

/// Whether the script holds no statement (only whitespace, comments and semicolons).
pub fn is_blank(sql: &str) -> bool {
    let parse = SourceFile::parse(sql);
    top_level(&parse.syntax_node()).all(|p| {
        matches!(
            p,
            Err(SyntaxKind::WHITESPACE | SyntaxKind::COMMENT | SyntaxKind::SEMICOLON)
        )
    })
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, byte: usize) -> usize {
    let byte = byte.min(text.len());
    text.as_bytes()[..byte]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Byte offset of a 1-based character position (PostgreSQL reports positions in characters).
pub fn byte_of_char_position(text: &str, position: usize) -> usize {
    text.char_indices()
        .nth(position.saturating_sub(1))
        .map_or(text.len(), |(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "-- head\ncreate table a (s text default 'x;y');\n\n/* c; */ create function f() returns int language sql as $$ select 1; $$;\ninsert into a values (';')";
        let stmts = split(sql).unwrap();
        assert_eq!(stmts.len(), 3, "{stmts:#?}");
        assert_eq!(stmts[0].text, "create table a (s text default 'x;y');");
        assert_eq!(line_of(sql, stmts[0].start), 2);
        assert!(stmts[1].text.starts_with("create function") && stmts[1].text.ends_with("$$;"));
        assert_eq!(stmts[2].text, "insert into a values (';')");
        assert_eq!(line_of(sql, stmts[2].start), 5);
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = split("select 1;\ncreate tabel x ();\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn blank_scripts() {
        assert!(is_blank("  -- nothing here\n/* or here */ ;\n"));
        assert_eq!(split("select 1;;\nselect 2").unwrap().len(), 2);
        assert!(!is_blank("-- x\nselect 1"));
    }

    #[test]
    fn positions() {
        assert_eq!(byte_of_char_position("é x", 3), 3);
        assert_eq!(byte_of_char_position("abc", 1), 0);
        assert_eq!(byte_of_char_position("abc", 9), 3);
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
