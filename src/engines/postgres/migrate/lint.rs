//! Lint with squawk's rules (the `squawk-linter` crate): the findings a reviewer should see before a
//! migration locks a busy table.
//!
//! Squawk's default rule set, except `require-lock-timeout` and `require-statement-timeout`: Lifeboat
//! sets both timeouts itself around every script. Each finding has a severity: rules about locks and
//! data safety (non-concurrent index creation, a NOT NULL column without a default, a type change that
//! rewrites the table, a constraint without `NOT VALID`, dropping a column or table…) are errors, which
//! fail a run under `lint: enforce`; style rules ([`STYLE_RULES`]: prefer bigint, text, timestamptz,
//! identity…) are warnings, recorded and counted but never failing a run. A run can exclude rules,
//! demote them to warnings or promote them to errors (which also turns on squawk's opt-in rules), and a
//! statement can carry squawk's own `-- squawk-ignore <rule>` comment (`-- squawk-ignore-file <rule>`
//! for the whole file).
//!
//! Transactional scripts are linted as running inside a transaction (Lifeboat wraps them in one);
//! `-- lifeboat:no-transaction` scripts as running outside. A syntax error is an error finding too
//! (rule `syntax-error`): such a file cannot be split into statements.

use std::collections::{BTreeMap, HashMap, HashSet};

use squawk_linter::{Linter, Rule};
use squawk_syntax::SourceFile;

use super::statements::line_of;
use crate::domain::migrations::{
    model::{LintCount, LintFinding, LintRules, Severity},
    source::Script,
};

/// Rule name of a finding for SQL the parser cannot read.
pub const SYNTAX_ERROR_RULE: &str = "syntax-error";

/// Rules left out of squawk's defaults, and why: Lifeboat sets both timeouts around every script.
pub const EXCLUDED_RULES: &[Rule] = &[Rule::RequireLockTimeout, Rule::RequireStatementTimeout];

/// Rules about style, portability or compatibility with the running application's old version, rather
/// than locks or data: their findings are warnings unless a run promotes them. (Dropping what holds
/// data — a table, a column, a schema, a sequence — stays an error.)
pub const STYLE_RULES: &[Rule] = &[
    Rule::BanDropDefault,
    Rule::BanDropView,
    Rule::BanDropFunction,
    Rule::BanDropType,
    Rule::BanDropDomain,
    Rule::BanDropConstraint,
    Rule::BanDropGeneratedExpression,
    Rule::BanSetSchema,
    Rule::BanAlterIdentity,
    Rule::PreferBigintOverInt,
    Rule::PreferBigintOverSmallint,
    Rule::PreferIdentity,
    Rule::PreferRepack,
    Rule::PreferRobustStmts,
    Rule::PreferTextField,
    Rule::PreferTimestampTz,
    Rule::BanCharField,
    Rule::RenamingColumn,
    Rule::RenamingTable,
    Rule::RenamingObject,
    Rule::BanDropNotNull,
    Rule::IdentifierTooLong,
    Rule::RequireEnumValueOrdering,
    Rule::UnusedIgnore,
];

/// Every rule name a run may name: squawk's rules that it reads by name (not its deprecated aliases,
/// nor `unused-ignore`), sorted.
pub fn rule_names() -> Vec<String> {
    let mut names: Vec<String> = enum_iterator::all::<Rule>()
        .filter(|r| r.expands_to().is_empty())
        .map(|r| r.to_string())
        .filter(|n| Rule::try_from(n.as_str()).is_ok())
        .collect();
    names.sort();
    names
}

/// Which rules run and how each counts, for one run.
#[derive(Clone, Debug)]
pub struct Policy {
    include: Vec<Rule>,
    exclude: Vec<Rule>,
    severities: HashMap<String, Severity>,
}

impl Default for Policy {
    /// Squawk's defaults with Lifeboat's severities (no rule named, so nothing to refuse).
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: EXCLUDED_RULES.to_vec(),
            severities: STYLE_RULES
                .iter()
                .map(|r| (r.to_string(), Severity::Warning))
                .collect(),
        }
    }
}

impl Policy {
    /// The rule set `rules` asks for; an unknown rule name, or one named twice, is an error that
    /// says which.
    pub fn new(rules: &LintRules) -> Result<Self, String> {
        let parse = |names: &[String], field: &str| -> Result<Vec<Rule>, String> {
            names
                .iter()
                .map(|n| {
                    Rule::try_from(n.as_str())
                        .map_err(|_| format!("lintRules.{field}: unknown rule {n:?}"))
                })
                .collect()
        };
        let exclude = parse(&rules.exclude, "exclude")?;
        let warn = parse(&rules.warn, "warn")?;
        let error = parse(&rules.error, "error")?;
        let mut seen = HashSet::new();
        for r in exclude.iter().chain(&warn).chain(&error) {
            if !seen.insert(*r) {
                return Err(format!(
                    "lintRules: rule {r} is named more than once across exclude, warn and error"
                ));
            }
        }
        let mut severities: HashMap<String, Severity> = STYLE_RULES
            .iter()
            .map(|r| (r.to_string(), Severity::Warning))
            .collect();
        for r in &warn {
            severities.insert(r.to_string(), Severity::Warning);
        }
        for r in &error {
            severities.insert(r.to_string(), Severity::Error);
        }
        let mut all_excluded = EXCLUDED_RULES.to_vec();
        all_excluded.extend(exclude);
        Ok(Self {
            include: warn.into_iter().chain(error).collect(),
            exclude: all_excluded,
            severities,
        })
    }

    fn severity(&self, rule: &str) -> Severity {
        self.severities
            .get(rule)
            .copied()
            .unwrap_or(Severity::Error)
    }
}

/// Lints one script; findings are in file order, lines counted in the file (not the section).
pub fn lint_script(script: &Script, policy: &Policy) -> Vec<LintFinding> {
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
            severity: Severity::Error,
        })
        .collect();
    let mut linter = Linter::with_rules(&policy.include, &policy.exclude);
    linter.settings.assume_in_transaction = !script.no_transaction;
    for v in linter.lint(&parse, &script.sql) {
        let mut message = v.message.trim_end_matches('.').to_string() + ".";
        if let Some(help) = v.help {
            message.push(' ');
            message.push_str(help.trim_end_matches('.'));
            message.push('.');
        }
        let rule = v.code.to_string();
        findings.push(LintFinding {
            file: script.file.clone(),
            line: line(usize::from(v.text_range.start())),
            severity: policy.severity(&rule),
            rule,
            message,
        });
    }
    findings
}

/// Lints every script, in order.
pub fn lint<'a>(
    scripts: impl IntoIterator<Item = &'a Script>,
    policy: &Policy,
) -> Vec<LintFinding> {
    scripts
        .into_iter()
        .flat_map(|s| lint_script(s, policy))
        .collect()
}

/// Findings per rule: errors first, then by count (most first), then by name.
pub fn counts(findings: &[LintFinding]) -> Vec<LintCount> {
    let mut by_rule: BTreeMap<(&str, Severity), usize> = BTreeMap::new();
    for f in findings {
        *by_rule.entry((f.rule.as_str(), f.severity)).or_default() += 1;
    }
    let mut out: Vec<LintCount> = by_rule
        .into_iter()
        .map(|((rule, severity), count)| LintCount {
            rule: rule.to_string(),
            severity,
            count,
        })
        .collect();
    out.sort_by(|a, b| {
        (a.severity, std::cmp::Reverse(a.count), &a.rule).cmp(&(
            b.severity,
            std::cmp::Reverse(b.count),
            &b.rule,
        ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint_script_default(s: &Script) -> Vec<LintFinding> {
        lint_script(s, &Policy::default())
    }

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
        let f = lint_script_default(&script(
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
        let f = lint_script_default(&script("alter table t add column note text;", false, 0));
        assert!(f.iter().all(|f| !f.rule.contains("timeout")), "{f:#?}");
    }

    #[test]
    fn concurrent_index_in_a_transaction_is_flagged_outside_is_not() {
        // squawk only judges files of more than one statement here.
        let sql = "select 1;\ncreate index concurrently if not exists i on t (a);";
        let inside = lint_script_default(&script(sql, false, 0));
        assert!(
            inside
                .iter()
                .any(|f| f.rule == "ban-concurrent-index-creation-in-transaction"),
            "{inside:#?}"
        );
        assert!(lint_script_default(&script(sql, true, 0)).is_empty());
    }

    #[test]
    fn syntax_errors_are_findings_with_section_offsets() {
        let f = lint_script_default(&script("select 1;\ncreate tabel x ();", false, 4));
        assert_eq!(f[0].rule, SYNTAX_ERROR_RULE);
        assert_eq!(f[0].line, Some(6));
    }

    #[test]
    fn clean_sql_has_no_findings() {
        assert!(
            lint_script_default(&script(
                "create table t (id bigint primary key, name text);",
                false,
                0
            ))
            .is_empty()
        );
    }

    #[test]
    fn style_rules_are_warnings_safety_rules_errors() {
        let f = lint_script_default(&script(
            "create table t (id int primary key, at timestamp, name varchar(10));\nalter table u add column n text not null;\n",
            false,
            0,
        ));
        let severity = |rule: &str| f.iter().find(|f| f.rule == rule).map(|f| f.severity);
        assert_eq!(
            severity("prefer-bigint-over-int"),
            Some(Severity::Warning),
            "{f:#?}"
        );
        assert_eq!(severity("prefer-timestamp-tz"), Some(Severity::Warning));
        assert_eq!(
            severity("adding-required-field").or(severity("adding-not-nullable-field")),
            Some(Severity::Error),
            "{f:#?}"
        );
        let c = counts(&f);
        assert_eq!(c[0].severity, Severity::Error, "errors come first: {c:#?}");
        assert_eq!(c.iter().map(|c| c.count).sum::<usize>(), f.len());
    }

    #[test]
    fn runs_exclude_demote_and_promote_rules() {
        let sql = "create table t (id int primary key);\ncreate index i on u (a);\ndrop index j;\n";
        let rules = LintRules {
            exclude: vec!["prefer-bigint-over-int".into()],
            warn: vec!["require-concurrent-index-creation".into()],
            error: vec!["ban-drop-index".into()],
        };
        let f = lint_script(&script(sql, false, 0), &Policy::new(&rules).unwrap());
        let severity = |rule: &str| f.iter().find(|f| f.rule == rule).map(|f| f.severity);
        assert_eq!(severity("prefer-bigint-over-int"), None, "{f:#?}");
        assert_eq!(
            severity("require-concurrent-index-creation"),
            Some(Severity::Warning)
        );
        assert_eq!(
            severity("ban-drop-index"),
            Some(Severity::Error),
            "an opt-in rule named in error runs: {f:#?}"
        );
        let err = Policy::new(&LintRules {
            warn: vec!["prefer-bigints".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err, "lintRules.warn: unknown rule \"prefer-bigints\"");
        let twice = Policy::new(&LintRules {
            warn: vec!["ban-drop-column".into()],
            error: vec!["ban-drop-column".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            twice.contains("ban-drop-column is named more than once"),
            "{twice}"
        );
    }

    #[test]
    fn squawk_ignore_comments_silence_one_statement() {
        let sql = "-- squawk-ignore ban-drop-column\nalter table t drop column a;\nalter table t drop column b;\n";
        let f = lint_script_default(&script(sql, false, 0));
        let drops: Vec<_> = f.iter().filter(|f| f.rule == "ban-drop-column").collect();
        assert_eq!(drops.len(), 1, "{f:#?}");
        assert_eq!(drops[0].line, Some(3));
    }

    #[test]
    fn rule_names_are_squawks() {
        let names = rule_names();
        assert!(names.contains(&"require-concurrent-index-creation".to_string()));
        assert!(
            !names.contains(&"require-timeout-settings".to_string()),
            "aliases are left out"
        );
        for n in &names {
            assert!(Rule::try_from(n.as_str()).is_ok(), "{n}");
        }
    }
}
