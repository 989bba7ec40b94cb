//! Lint with squawk's rules (the `squawk-linter` crate): the findings a reviewer should see before a
//! migration locks a busy table.
//!
//! Squawk's default rule set, except `require-lock-timeout` and `require-statement-timeout`: Lifeboat
//! sets both timeouts itself around every script. Transactional scripts are linted as running inside a
//! transaction (Lifeboat wraps them in one); `-- lifeboat:no-transaction` scripts as running outside.
//! A syntax error is a finding too (rule `syntax-error`): such a file cannot be split into statements.

use squawk_linter::{Linter, Rule};
use squawk_syntax::SourceFile;

use super::model::LintFinding;
use super::{source::Script, statements::line_of};

/// Rule name of a finding for SQL the parser cannot read.
pub const SYNTAX_ERROR_RULE: &str = "syntax-error";

/// Rules left out of squawk's defaults, and why: Lifeboat sets both timeouts around every script.
pub const EXCLUDED_RULES: &[Rule] = &[Rule::RequireLockTimeout, Rule::RequireStatementTimeout];

/// Lints one script; findings are in file order, lines counted in the file (not the section).
pub fn lint_script(script: &Script) -> Vec<LintFinding> {
    let parse = SourceFile::parse(&script.sql);
    let line =
        |offset: usize| i32::try_from(script.line_offset + line_of(&script.sql, offset)).ok();
    let mut findings: Vec<LintFinding> = parse
        .errors()
        .iter()
        .map(|e| LintFinding {
            file: script.file.clone(),
            line: line(usize::from(e.range().start())),
            rule: SYNTAX_ERROR_RULE.into(),
            message: format!("{}.", e.message()),
        })
        .collect();
    let mut linter = Linter::with_rules(&[], EXCLUDED_RULES);
    linter.settings.assume_in_transaction = !script.no_transaction;
    for v in linter.lint(&parse, &script.sql) {
        let mut message = v.message.trim_end_matches('.').to_string() + ".";
        if let Some(help) = v.help {
            message.push(' ');
            message.push_str(help.trim_end_matches('.'));
            message.push('.');
        }
        findings.push(LintFinding {
            file: script.file.clone(),
            line: line(usize::from(v.text_range.start())),
            rule: v.code.to_string(),
            message,
        });
    }
    findings
}

/// Lints every script, in order.
pub fn lint<'a>(scripts: impl IntoIterator<Item = &'a Script>) -> Vec<LintFinding> {
    scripts.into_iter().flat_map(lint_script).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(sql: &str, no_transaction: bool, line_offset: usize) -> Script {
        Script {
            file: "2_idx.up.sql".into(),
            sql: sql.into(),
            no_transaction,
            line_offset,
        }
    }

    #[test]
    fn flags_blocking_index_creation_with_file_and_line() {
        let f = lint_script(&script(
            "alter table t add column a text;\n\ncreate index t_a on t (a);\n",
            false,
            0,
        ));
        let finding = f
            .iter()
            .find(|f| f.rule == "require-concurrent-index-creation")
            .unwrap_or_else(|| panic!("{f:#?}"));
        assert_eq!(finding.file, "2_idx.up.sql");
        assert_eq!(finding.line, Some(3));
        assert!(finding.message.ends_with('.'), "{}", finding.message);
    }

    #[test]
    fn lifeboat_sets_timeouts_so_their_rules_stay_quiet() {
        let f = lint_script(&script("alter table t add column note text;", false, 0));
        assert!(f.iter().all(|f| !f.rule.contains("timeout")), "{f:#?}");
    }

    #[test]
    fn concurrent_index_in_a_transaction_is_flagged_outside_is_not() {
        // squawk only judges files of more than one statement here.
        let sql = "select 1;\ncreate index concurrently if not exists i on t (a);";
        let inside = lint_script(&script(sql, false, 0));
        assert!(
            inside
                .iter()
                .any(|f| f.rule == "ban-concurrent-index-creation-in-transaction"),
            "{inside:#?}"
        );
        assert!(lint_script(&script(sql, true, 0)).is_empty());
    }

    #[test]
    fn syntax_errors_are_findings_with_section_offsets() {
        let f = lint_script(&script("select 1;\ncreate tabel x ();", false, 4));
        assert_eq!(f[0].rule, SYNTAX_ERROR_RULE);
        assert_eq!(f[0].line, Some(6));
    }

    #[test]
    fn clean_sql_has_no_findings() {
        assert!(
            lint_script(&script(
                "create table t (id bigint primary key, name text);",
                false,
                0
            ))
            .is_empty()
        );
    }
}
