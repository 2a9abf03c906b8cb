//! The slash-command grammar of PR comments (docs/commands.md).
//!
//! A command is a line of plain paragraph text that starts (after at most three spaces, as in
//! markdown) with `/` and a command word. Code (fenced, indented, inline), quotes (`>`), HTML
//! blocks and comments, and link texts are never read, so a comment that *mentions* `/stage` is
//! not a command. One command per line; every command line of a comment is returned, in order.
//!
//! | Input                              | Result                                             |
//! |------------------------------------|----------------------------------------------------|
//! | `/stage`, `/STAGE`                 | `Stage { profile: None }`                          |
//! | `/stage lite`                      | `Stage { profile: Some("lite") }` (any `[a-z0-9_-]{1,32}` word is a profile name; the repository configuration decides whether it exists) |
//! | `/stage abc1234`, `/stage lite abc1234` | `Stage { sha: Some("abc1234") }`: a word of 7 to 40 hex digits is a commit, never a profile |
//! | `/promote`, `/promote prod`        | `Promote { Staging }`, `Promote { Production }`    |
//! | `/rollback`, `/rollback production 3`, `/rollback staging abc1234` | `Rollback { Preview, None }`, ... |
//! | `/extend 2d`, `/extend 1d 12h`     | `Extend { by }` (see [`parse_duration`])           |
//! | `/teardown now please`             | error: takes no arguments                          |
//! | `/stgae`                           | error, suggestion `/stage`                         |
//! | `/lgtm`                            | error without suggestion ([`CommandErrorKind::UnknownCommand`]) |
//! | `please /stage this`, `/`, `/ stage`, `//x`, `/usr/bin`, `/123` | not a command (ignored) |
//! | `/stage.`                          | error, suggestion `/stage`                         |
//!
//! Arguments: `/rollback [preview|staging|production|prod] [<release>|<sha>]`. A release is a
//! number of at most six digits, optionally written `#3`; a sha is 4 to 40 hex digits (an
//! all-digit word of seven or more digits is a sha, since git abbreviates to seven).

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use pulldown_cmark::{Event as Md, Options, Parser, Tag, TagEnd};

use crate::types::EnvKind;

/// One command from a PR comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Deploy (or redeploy) the PR's preview, optionally with a named profile, optionally of a
    /// named commit of the PR (7 to 40 hex digits, lowercased).
    Stage {
        profile: Option<String>,
        sha: Option<String>,
    },
    /// Deploy the PR's commit to staging or production; `skip_checks` (admins) deploys without
    /// waiting for the CI gate, and is recorded on the release.
    Promote {
        target: PromoteTarget,
        skip_checks: bool,
    },
    /// Redeploy an earlier release of an environment; `None` means the one before the current.
    Rollback {
        target: EnvTarget,
        to: Option<RollbackTo>,
    },
    /// Destroy the PR's preview.
    Teardown,
    /// Postpone the preview's expiry by this much.
    Extend { by: Duration },
    /// Report the PR's environments.
    Status,
    /// Show the command list.
    Help,
}

/// Where `/promote` deploys to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PromoteTarget {
    #[default]
    Staging,
    Production,
}

/// Which environment `/rollback` acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EnvTarget {
    #[default]
    Preview,
    Staging,
    Production,
}

/// The release `/rollback` returns to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RollbackTo {
    /// A release number (`n` of docs/commands.md), at least 1.
    Release(u32),
    /// A commit sha prefix: 4 to 40 hex digits, lowercased.
    Sha(String),
}

impl From<PromoteTarget> for EnvKind {
    fn from(t: PromoteTarget) -> Self {
        match t {
            PromoteTarget::Staging => EnvKind::Staging,
            PromoteTarget::Production => EnvKind::Production,
        }
    }
}

impl From<EnvTarget> for EnvKind {
    fn from(t: EnvTarget) -> Self {
        match t {
            EnvTarget::Preview => EnvKind::Preview,
            EnvTarget::Staging => EnvKind::Staging,
            EnvTarget::Production => EnvKind::Production,
        }
    }
}

impl Command {
    /// The command word, without the slash: `stage`, `promote`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Command::Stage { .. } => "stage",
            Command::Promote { .. } => "promote",
            Command::Rollback { .. } => "rollback",
            Command::Teardown => "teardown",
            Command::Extend { .. } => "extend",
            Command::Status => "status",
            Command::Help => "help",
        }
    }
}

/// The canonical spelling, which [`parse_commands`] reads back as the same command.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.name())?;
        match self {
            Command::Stage { profile, sha } => {
                if let Some(p) = profile {
                    write!(f, " {p}")?;
                }
                if let Some(sha) = sha {
                    write!(f, " {sha}")?;
                }
                Ok(())
            }
            Command::Promote {
                target,
                skip_checks,
            } => {
                write!(f, " {}", EnvKind::from(*target))?;
                if *skip_checks {
                    write!(f, " --skip-checks")?;
                }
                Ok(())
            }
            Command::Rollback { target, to } => {
                write!(f, " {}", EnvKind::from(*target))?;
                match to {
                    Some(RollbackTo::Release(n)) if *n <= MAX_PLAIN_RELEASE => write!(f, " {n}"),
                    Some(RollbackTo::Release(n)) => write!(f, " #{n}"),
                    Some(RollbackTo::Sha(sha)) => write!(f, " {sha}"),
                    None => Ok(()),
                }
            }
            Command::Extend { by } => write!(f, " {}", format_duration(*by)),
            _ => Ok(()),
        }
    }
}

/// What kind of mistake a [`CommandError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandErrorKind {
    /// The line starts with a `/word` that is no command. Without a
    /// [`suggestion`](CommandError::suggestion) this may be another bot's command (`/lgtm`,
    /// `/cc`); the reply layer can choose to stay quiet about it.
    UnknownCommand,
    /// A known command with arguments it does not take.
    InvalidArguments,
}

/// A command line stagebot could not read: what is wrong ([`Problem`]) and maybe a correction.
/// Its text for the PR author (`Display`) is written by `messages::command_error`.
///
/// `line` is the raw command line (clipped to 200 characters), never posted; the user's words
/// in `problem` are clipped to 40 characters (`messages` quotes them as code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", crate::messages::command_error(self))]
pub struct CommandError {
    /// The offending line, trimmed.
    pub line: String,
    /// What is wrong.
    pub problem: Problem,
    /// A corrected command, e.g. `/promote production` (it may repeat the user's later words).
    pub suggestion: Option<String>,
    pub kind: CommandErrorKind,
}

impl CommandError {
    /// What is wrong, as a sentence (without the suggestion).
    pub fn message(&self) -> String {
        crate::messages::command_problem(&self.problem, self.suggestion.is_some())
    }
}

/// What is wrong with a command line. Words are the user's, clipped to 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `/stage.` or `/stage:lite`: a command name followed by something else (`word`: all after
    /// the slash).
    NearMiss { word: String },
    /// `/word` is no stagebot command.
    Unknown { word: String },
    /// A known command with arguments it does not take; `usage` is its usage line.
    Arguments {
        usage: &'static str,
        problem: ArgProblem,
    },
}

/// What is wrong with a known command's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgProblem {
    /// The command (its name) takes none.
    NoArguments {
        name: &'static str,
    },
    StageTooMany,
    StageTwoShas,
    StageTwoProfiles,
    /// Neither a profile name nor a commit.
    NotAProfile {
        word: String,
    },
    /// `/promote` to something that is not staging or production.
    PromoteWhere {
        word: String,
    },
    PromoteTooMany,
    ExtendNeedsDuration,
    NotADuration {
        text: String,
    },
    /// A `/rollback` first word that is no environment, followed by another word.
    NotAnEnvironment {
        word: String,
    },
    RollbackTooMany,
    ReleaseZero,
    NotAReleaseNumber {
        word: String,
    },
    NotReleaseNorSha {
        word: String,
    },
    /// A command in the table without a parser (a bug; the name is the command's).
    NotImplemented {
        name: &'static str,
    },
}

/// The commands, in help order: name, usage, description, examples (the command list of
/// `messages::help`).
pub(crate) const COMMANDS: &[(&str, &str, &str, &[&str])] = &[
    (
        "stage",
        "/stage [<profile>] [<sha>]",
        "deploy this pull request's preview environment (again); a profile from \
         `.github/stagebot.yml` selects a variant, a commit (7 to 40 hex digits) deploys that \
         commit of the pull request",
        &["/stage", "/stage lite", "/stage lite 1a2b3c4"],
    ),
    (
        "promote",
        "/promote [staging|production] [--skip-checks]",
        "deploy this pull request's commit to staging (the default) or production; on a merged \
         pull request, `/promote production` promotes the staging release of its merge commit; \
         `--skip-checks` (admins) does not wait for `require_checks`",
        &["/promote", "/promote production"],
    ),
    (
        "rollback",
        "/rollback [preview|staging|production] [<release>|<sha>]",
        "redeploy an earlier release (by default the previous one) of the preview (the \
         default), staging or production",
        &[
            "/rollback",
            "/rollback production 3",
            "/rollback staging abc1234",
        ],
    ),
    (
        "teardown",
        "/teardown",
        "destroy this pull request's preview environment",
        &["/teardown"],
    ),
    (
        "extend",
        "/extend <duration>",
        "keep the preview longer before it expires (units: m, h, d, w)",
        &["/extend 2d", "/extend 1d 12h"],
    ),
    (
        "status",
        "/status",
        "show this pull request's environments",
        &["/status"],
    ),
    ("help", "/help", "show this list", &["/help"]),
];

/// Environment words accepted by `/promote` and `/rollback`.
const ENV_WORDS: &[&str] = &["preview", "staging", "production", "prod"];

/// Release numbers up to this are written as plain digits; longer digit strings are shas.
const MAX_PLAIN_RELEASE: u32 = 999_999;

/// Every command line of a comment body, in order: a command, or why the line is not one.
///
/// Lines that do not look like commands at all are skipped; see the module docs for the rules.
pub fn parse_commands(body: &str) -> Vec<Result<Command, CommandError>> {
    let text = body.replace("\r\n", "\n").replace('\r', "\n");
    let regions = Regions::of(&text);
    let mut out = Vec::new();
    let mut line_start = 0;
    for line in text.split('\n') {
        let start = line_start;
        line_start += line.len() + 1;
        let rest = line.trim_start_matches(' ');
        let indent = line.len() - rest.len();
        if indent > 3 || !rest.starts_with('/') || !regions.is_plain(start + indent) {
            continue;
        }
        if let Some(result) = parse_line(rest.trim_end()) {
            out.push(result);
        }
    }
    out
}

/// Which parts of a markdown text are plain prose.
struct Regions {
    /// Paragraphs and headings outside block quotes.
    plain: Vec<Range<usize>>,
    /// Inline code, inline HTML and link or image texts inside them.
    excluded: Vec<Range<usize>>,
}

impl Regions {
    fn of(text: &str) -> Self {
        let options =
            Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
        let mut regions = Regions {
            plain: Vec::new(),
            excluded: Vec::new(),
        };
        let mut quote_depth = 0usize;
        for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
            match event {
                Md::Start(Tag::BlockQuote(_)) => quote_depth += 1,
                Md::End(TagEnd::BlockQuote(_)) => quote_depth = quote_depth.saturating_sub(1),
                Md::Start(Tag::Paragraph | Tag::Heading { .. }) if quote_depth == 0 => {
                    regions.plain.push(range);
                }
                Md::Start(Tag::Link { .. } | Tag::Image { .. })
                | Md::Code(_)
                | Md::InlineHtml(_) => regions.excluded.push(range),
                _ => {}
            }
        }
        regions.plain = merged(regions.plain);
        regions.excluded = merged(regions.excluded);
        regions
    }

    fn is_plain(&self, at: usize) -> bool {
        covers(&self.plain, at) && !covers(&self.excluded, at)
    }
}

/// The same positions as `ranges`, as sorted, disjoint ranges (links may contain code spans).
fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Does one of the sorted, disjoint `ranges` contain `at`?
fn covers(ranges: &[Range<usize>], at: usize) -> bool {
    let after = ranges.partition_point(|r| r.start <= at);
    after > 0 && ranges.get(after - 1).is_some_and(|r| r.contains(&at))
}

/// Reads one line that starts with `/`; `None` when it is not meant as a command.
fn parse_line(line: &str) -> Option<Result<Command, CommandError>> {
    let after_slash = line.strip_prefix('/')?;
    if after_slash.starts_with(char::is_whitespace) {
        return None; // `/`, `/ stage`
    }
    let mut words = after_slash.split_whitespace();
    let word = words.next()?;
    if word.contains('/') {
        return None; // `//comment`, `/usr/bin`, `/path/to`
    }
    let error = |kind, problem: Problem, suggestion: Option<String>| CommandError {
        line: clip(line, 200),
        problem,
        suggestion,
        kind,
    };
    let is_word = word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !is_word {
        // `/stage.` or `/stage:lite` is a near miss; `/123` or `/é` is not meant for us.
        let head: String = word
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_ascii_lowercase();
        return COMMANDS.iter().any(|c| c.0 == head).then(|| {
            Err(error(
                CommandErrorKind::UnknownCommand,
                Problem::NearMiss {
                    word: clip(word, 40),
                },
                Some(format!("/{head}")),
            ))
        });
    }
    let name = word.to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let Some(&(name, usage, ..)) = COMMANDS.iter().find(|c| c.0 == name) else {
        let suggestion = closest(&name, COMMANDS.iter().map(|c| c.0)).map(|n| format!("/{n}"));
        return Some(Err(error(
            CommandErrorKind::UnknownCommand,
            Problem::Unknown {
                word: clip(word, 40),
            },
            suggestion,
        )));
    };
    Some(parse_args(name, &args).map_err(|(problem, suggestion)| {
        error(
            CommandErrorKind::InvalidArguments,
            Problem::Arguments { usage, problem },
            suggestion,
        )
    }))
}

type ArgError = (ArgProblem, Option<String>);

fn parse_args(name: &'static str, args: &[&str]) -> Result<Command, ArgError> {
    let no_args = |command: Command| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err((ArgProblem::NoArguments { name }, None))
        }
    };
    match name {
        "stage" => {
            if args.len() > 2 {
                return Err((ArgProblem::StageTooMany, None));
            }
            let (mut profile, mut sha) = (None, None);
            for arg in args {
                if is_commit_word(arg) {
                    if sha.is_some() {
                        return Err((ArgProblem::StageTwoShas, None));
                    }
                    sha = Some(arg.to_ascii_lowercase());
                    continue;
                }
                let name = arg.to_ascii_lowercase();
                let valid = (1..=32).contains(&name.len())
                    && name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !valid {
                    return Err((
                        ArgProblem::NotAProfile {
                            word: clip(&name, 40),
                        },
                        None,
                    ));
                }
                if profile.is_some() {
                    return Err((ArgProblem::StageTwoProfiles, None));
                }
                profile = Some(name);
            }
            Ok(Command::Stage { profile, sha })
        }
        "promote" => {
            let skip_checks = args.iter().any(|a| a.eq_ignore_ascii_case("--skip-checks"));
            let rest: Vec<&&str> = args
                .iter()
                .filter(|a| !a.eq_ignore_ascii_case("--skip-checks"))
                .collect();
            let target = match rest.as_slice() {
                [] => PromoteTarget::Staging,
                [target] => match target.to_ascii_lowercase().as_str() {
                    "staging" => PromoteTarget::Staging,
                    "production" | "prod" => PromoteTarget::Production,
                    other => {
                        return Err((
                            ArgProblem::PromoteWhere {
                                word: clip(target, 40),
                            },
                            closest(other, ["staging", "production"])
                                .map(|t| format!("/promote {t}")),
                        ));
                    }
                },
                _ => {
                    return Err((ArgProblem::PromoteTooMany, None));
                }
            };
            Ok(Command::Promote {
                target,
                skip_checks,
            })
        }
        "rollback" => parse_rollback(args),
        "teardown" => no_args(Command::Teardown),
        "status" => no_args(Command::Status),
        "help" => no_args(Command::Help),
        "extend" => {
            if args.is_empty() {
                return Err((ArgProblem::ExtendNeedsDuration, None));
            }
            let text = args.join(" ");
            match parse_duration(&text) {
                Some(by) => Ok(Command::Extend { by }),
                None => Err((
                    ArgProblem::NotADuration {
                        text: clip(&text, 40),
                    },
                    None,
                )),
            }
        }
        _ => Err((ArgProblem::NotImplemented { name }, None)),
    }
}

/// A word `/stage` reads as a commit: 7 to 40 hex digits (git abbreviates to seven). Profile
/// names may not be all hex, so no profile is ever read as a commit.
pub fn is_commit_word(word: &str) -> bool {
    (7..=40).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_rollback(args: &[&str]) -> Result<Command, ArgError> {
    let env_of = |word: &str| match word.to_ascii_lowercase().as_str() {
        "preview" => Some(EnvTarget::Preview),
        "staging" => Some(EnvTarget::Staging),
        "production" | "prod" => Some(EnvTarget::Production),
        _ => None,
    };
    // `/rollback prodution 3` or `/rollback prodution`: a misspelled environment.
    let misspelled_env = |word: &str| {
        closest(&word.to_ascii_lowercase(), ENV_WORDS.iter().copied()).map(|env| {
            let mut fixed = vec!["/rollback", env];
            fixed.extend(args.iter().skip(1));
            fixed.join(" ")
        })
    };
    let (target, to) = match args {
        [] => (EnvTarget::Preview, None),
        [first] => match env_of(first) {
            Some(env) => (env, None),
            None => match parse_rollback_to(first) {
                Ok(to) => (EnvTarget::Preview, Some(to)),
                Err(message) => return Err((message, misspelled_env(first))),
            },
        },
        [first, second] => match env_of(first) {
            Some(env) => (env, Some(parse_rollback_to(second).map_err(|m| (m, None))?)),
            None => {
                return Err((
                    ArgProblem::NotAnEnvironment {
                        word: clip(first, 40),
                    },
                    misspelled_env(first),
                ));
            }
        },
        _ => {
            return Err((ArgProblem::RollbackTooMany, None));
        }
    };
    Ok(Command::Rollback { target, to })
}

fn parse_rollback_to(word: &str) -> Result<RollbackTo, ArgProblem> {
    let explicit = word.strip_prefix('#');
    let digits = explicit.unwrap_or(word);
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if all_digits && (explicit.is_some() || digits.len() <= 6) {
        return match digits.parse::<u32>() {
            Ok(0) => Err(ArgProblem::ReleaseZero),
            Ok(n) => Ok(RollbackTo::Release(n)),
            Err(_) => Err(ArgProblem::NotAReleaseNumber {
                word: clip(word, 40),
            }),
        };
    }
    if (4..=40).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(RollbackTo::Sha(word.to_ascii_lowercase()));
    }
    Err(ArgProblem::NotReleaseNorSha {
        word: clip(word, 40),
    })
}

/// The candidate closest to `word` (optimal string alignment distance ≤ 2, or ≤ 1 for words of
/// up to three letters), or a candidate `word` is a prefix of (at least three letters).
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = if word.chars().count() <= 3 { 1 } else { 2 };
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let d = if word.len() >= 3 && candidate.starts_with(word) {
            0
        } else {
            osa_distance(word, candidate)
        };
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance that also counts swapping two neighbours as one edit (`stgae`).
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        if let Some(first) = row.first_mut() {
            *first = i;
        }
    }
    if let Some(first_row) = rows.first_mut() {
        for (j, cell) in first_row.iter_mut().enumerate() {
            *cell = j;
        }
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// At most `max` characters of `s`, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// The longest duration [`parse_duration`] accepts: 100 years, so adding it to a clock never
/// overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Reads a duration: one or more `<number><unit>` parts, optionally separated by spaces, summed.
///
/// Units (case-insensitive, except that `M` is refused as ambiguous with months): `s`, `m`,
/// `h`, `d`, `w`, and the words `sec`, `min`, `hr`, `hour`, `day`, `week` (also plural). Zero
/// and anything over [`MAX_DURATION`] are refused. Examples: `90m`, `12h`, `2d`, `1w`, `3d12h`,
/// `1d 12h`, `2 days`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let after = after.trim_start();
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit == "M" {
            return None;
        }
        let unit_seconds: u64 = match unit.to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit_seconds)?)?;
        rest = after.trim_start();
    }
    let duration = Duration::from_secs(total);
    (total > 0 && duration <= MAX_DURATION).then_some(duration)
}

/// A duration the way people write it: `2d`, `1d 12h`, `1h 30m`, `45s` (whole seconds; `0s`
/// below one second). [`parse_duration`] reads the result back.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What one returned item must be.
    #[derive(Debug)]
    enum Want {
        Ok(Command),
        /// An error whose message contains the text, with this suggestion.
        Err(&'static str, Option<&'static str>),
    }
    use Want::{Err as E, Ok as K};

    fn stage(p: Option<&str>) -> Command {
        Command::Stage {
            profile: p.map(str::to_owned),
            sha: None,
        }
    }
    fn stage_at(p: Option<&str>, sha: &str) -> Command {
        Command::Stage {
            profile: p.map(str::to_owned),
            sha: Some(sha.to_owned()),
        }
    }
    fn promote(target: PromoteTarget) -> Command {
        Command::Promote {
            target,
            skip_checks: false,
        }
    }
    fn rollback(target: EnvTarget, to: Option<RollbackTo>) -> Command {
        Command::Rollback { target, to }
    }
    fn sha(s: &str) -> Option<RollbackTo> {
        Some(RollbackTo::Sha(s.to_owned()))
    }
    fn extend(secs: u64) -> Command {
        Command::Extend {
            by: Duration::from_secs(secs),
        }
    }
    use EnvTarget::{Preview, Production as Prod, Staging};
    use RollbackTo::Release;

    fn cases() -> Vec<(&'static str, Vec<Want>)> {
        vec![
            // The plain commands.
            ("/stage", vec![K(stage(None))]),
            ("/stage lite", vec![K(stage(Some("lite")))]),
            ("/stage Full_2", vec![K(stage(Some("full_2")))]),
            ("/stage please", vec![K(stage(Some("please")))]),
            ("/stage 1a2b3c4", vec![K(stage_at(None, "1a2b3c4"))]),
            (
                "/stage lite 1A2B3C4D5E",
                vec![K(stage_at(Some("lite"), "1a2b3c4d5e"))],
            ),
            (
                "/stage 1a2b3c4 lite",
                vec![K(stage_at(Some("lite"), "1a2b3c4"))],
            ),
            ("/stage abc123", vec![K(stage(Some("abc123")))]),
            ("/stage 1234567", vec![K(stage_at(None, "1234567"))]),
            (
                "/stage 1a2b3c4 5e6f7a8",
                vec![E("takes one commit sha", None)],
            ),
            ("/stage lite full", vec![E("takes one profile name", None)]),
            (
                "/stage lite full 1a2b3c4",
                vec![E("at most a profile name and a commit sha", None)],
            ),
            ("/STAGE", vec![K(stage(None))]),
            ("/Promote", vec![K(promote(PromoteTarget::Staging))]),
            ("/promote staging", vec![K(promote(PromoteTarget::Staging))]),
            (
                "/promote production",
                vec![K(promote(PromoteTarget::Production))],
            ),
            ("/promote PROD", vec![K(promote(PromoteTarget::Production))]),
            ("/rollback", vec![K(rollback(Preview, None))]),
            ("/rollback production", vec![K(rollback(Prod, None))]),
            (
                "/rollback production 3",
                vec![K(rollback(Prod, Some(Release(3))))],
            ),
            ("/rollback 3", vec![K(rollback(Preview, Some(Release(3))))]),
            (
                "/rollback #12",
                vec![K(rollback(Preview, Some(Release(12))))],
            ),
            (
                "/rollback production abc1234",
                vec![K(rollback(Prod, sha("abc1234")))],
            ),
            (
                "/rollback prod ABCDEF0",
                vec![K(rollback(Prod, sha("abcdef0")))],
            ),
            ("/rollback staging", vec![K(rollback(Staging, None))]),
            (
                "/rollback preview beef",
                vec![K(rollback(Preview, sha("beef")))],
            ),
            (
                "/rollback 1234567",
                vec![K(rollback(Preview, sha("1234567")))],
            ),
            ("/teardown", vec![K(Command::Teardown)]),
            ("/status", vec![K(Command::Status)]),
            ("/help", vec![K(Command::Help)]),
            ("/extend 2d", vec![K(extend(2 * 86_400))]),
            ("/extend 90m", vec![K(extend(90 * 60))]),
            ("/extend 1d 12h", vec![K(extend(36 * 3_600))]),
            ("/extend 1w", vec![K(extend(7 * 86_400))]),
            // Placement: leading spaces, CRLF, several commands, surrounding prose.
            ("   /stage", vec![K(stage(None))]),
            ("/stage   \t", vec![K(stage(None))]),
            (
                "Looks good!\r\n/stage lite\r\n\r\n/promote\r\nthanks",
                vec![K(stage(Some("lite"))), K(promote(PromoteTarget::Staging))],
            ),
            ("/status\r/help", vec![K(Command::Status), K(Command::Help)]),
            (
                "Ünïcödé prose 🚀\n/extend 3d12h\n/rollback production 2\n/stgae",
                vec![
                    K(extend(84 * 3_600)),
                    K(rollback(Prod, Some(Release(2)))),
                    E("is not a stagebot command", Some("/stage")),
                ],
            ),
            ("- /stage", vec![]),
            ("1. /stage", vec![]),
            ("# /stage", vec![]),
            ("/stage\n---", vec![K(stage(None))]),
            // Not commands: prose, code, quotes, HTML, links.
            ("please /stage this", vec![]),
            ("`/stage`", vec![]),
            ("``\n/stage\n``", vec![]),
            ("```\n/stage\n```", vec![]),
            ("~~~sh\n/teardown\n~~~\n/status", vec![K(Command::Status)]),
            ("```\n/stage\n", vec![]),
            ("    /stage", vec![]),
            ("\t/stage", vec![]),
            ("> /stage", vec![]),
            ("> quoted text\n/stage", vec![]),
            ("> quoted text\n\n/stage", vec![K(stage(None))]),
            ("> > /promote production", vec![]),
            ("<!--\n/stage\n-->", vec![]),
            ("[a link\n/stage](https://example.com)", vec![]),
            ("\\/stage", vec![]),
            ("/", vec![]),
            ("/ stage", vec![]),
            ("//comment", vec![]),
            ("/usr/bin/env", vec![]),
            ("/path/to", vec![]),
            ("/123", vec![]),
            ("/étape", vec![]),
            ("", vec![]),
            // Errors.
            (
                "/stgae",
                vec![E("`/stgae` is not a stagebot command", Some("/stage"))],
            ),
            (
                "/Promot",
                vec![E("is not a stagebot command", Some("/promote"))],
            ),
            (
                "/roll",
                vec![E("is not a stagebot command", Some("/rollback"))],
            ),
            ("/lgtm", vec![E("Comment `/help`", None)]),
            ("/me waves", vec![E("`/me` is not", None)]),
            (
                "/stage.",
                vec![E("`/stage.` is not a command", Some("/stage"))],
            ),
            (
                "/teardown now please",
                vec![E("`/teardown` takes no arguments", None)],
            ),
            ("/status all", vec![E("`/status` takes no arguments", None)]),
            (
                "/stage this please",
                vec![E("takes one profile name", None)],
            ),
            (
                "/stage lite!",
                vec![E("`lite!` is not a profile name", None)],
            ),
            (
                "/stage zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
                vec![E("is not a profile name", None)],
            ),
            (
                "/promote prodution",
                vec![E("not `prodution`", Some("/promote production"))],
            ),
            ("/promote everywhere", vec![E("not `everywhere`", None)]),
            (
                "/promote staging now",
                vec![E("at most one argument", None)],
            ),
            ("/extend", vec![E("`/extend` needs a duration", None)]),
            (
                "/extend forever",
                vec![E("`forever` is not a duration", None)],
            ),
            ("/extend 0d", vec![E("is not a duration", None)]),
            ("/extend 2", vec![E("is not a duration", None)]),
            (
                "/extend 99999999999999999999d",
                vec![E("is not a duration", None)],
            ),
            ("/rollback 0", vec![E("start at 1", None)]),
            (
                "/rollback #99999999999",
                vec![E("is not a release number", None)],
            ),
            (
                "/rollback xyz",
                vec![E("neither a release number nor a commit sha", None)],
            ),
            (
                "/rollback prodution 3",
                vec![E(
                    "`prodution` is not an environment",
                    Some("/rollback production 3"),
                )],
            ),
            (
                "/rollback stagin",
                vec![E("neither a release number", Some("/rollback staging"))],
            ),
            (
                "/rollback production 3 4",
                vec![E("takes an environment, then", None)],
            ),
            (
                "/rollback 3 production",
                vec![E("`3` is not an environment", None)],
            ),
        ]
    }

    #[test]
    fn grammar_table() {
        let cases = cases();
        assert!(cases.len() >= 30);
        for (input, wants) in cases {
            let got = parse_commands(input);
            assert_eq!(got.len(), wants.len(), "{input:?}: {got:?}");
            for (got, want) in got.iter().zip(&wants) {
                match (got, want) {
                    (Ok(c), Want::Ok(w)) => assert_eq!(c, w, "{input:?}"),
                    (Err(e), Want::Err(text, suggestion)) => {
                        assert!(e.message().contains(text), "{input:?}: {e}");
                        assert_eq!(e.suggestion.as_deref(), *suggestion, "{input:?}: {e}");
                        assert!(!e.line.is_empty() && e.line.starts_with('/'), "{input:?}");
                    }
                    _ => panic!("{input:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    fn one_error(body: &str) -> CommandError {
        match parse_commands(body).as_slice() {
            [Err(e)] => e.clone(),
            other => panic!("{body:?}: {other:?}"),
        }
    }

    #[test]
    fn error_display_and_kind() {
        let e = one_error("/promot production");
        assert_eq!(
            e.to_string(),
            "`/promot` is not a stagebot command. Did you mean `/promote`?"
        );
        assert_eq!(e.kind, CommandErrorKind::UnknownCommand);
        assert_eq!(e.line, "/promot production");
        let e = one_error("  /teardown now please  ");
        assert_eq!(
            e.to_string(),
            "`/teardown` takes no arguments. Usage: `/teardown`."
        );
        assert_eq!(e.kind, CommandErrorKind::InvalidArguments);
        assert_eq!(e.line, "/teardown now please");
    }

    #[test]
    fn user_text_cannot_escape_code_spans() {
        let e = one_error("/stage a`@everyone`");
        assert!(
            e.message().starts_with("`` a`@everyone` `` is not"),
            "{}",
            e.message()
        );
        assert_eq!(crate::markdown::code("x"), "`x`");
        assert_eq!(crate::markdown::code("`"), "`` ` ``");
        let long = format!("/{}", "x".repeat(10_000));
        let e = one_error(&long);
        assert!(e.message().len() < 200 && e.line.chars().count() <= 201);
    }

    #[test]
    fn canonical_form_round_trips() {
        let commands = [
            stage(None),
            stage(Some("lite")),
            stage_at(None, "1a2b3c4"),
            stage_at(Some("lite"), &"f".repeat(40)),
            promote(PromoteTarget::Staging),
            promote(PromoteTarget::Production),
            rollback(Preview, None),
            rollback(Staging, Some(Release(3))),
            rollback(Prod, Some(Release(u32::MAX))),
            rollback(Prod, sha("abcd")),
            Command::Teardown,
            extend(36 * 3_600 + 61),
            Command::Status,
            Command::Help,
        ];
        for command in commands {
            let text = command.to_string();
            assert_eq!(parse_commands(&text), vec![Ok(command)], "{text}");
        }
        assert_eq!(
            rollback(Prod, Some(Release(3))).to_string(),
            "/rollback production 3"
        );
    }

    #[test]
    fn help_lists_every_command() {
        let help = crate::messages::help();
        for (name, usage, ..) in COMMANDS {
            assert!(help.contains(&format!("- `{usage}`")), "{name}");
            assert!(matches!(
                parse_commands(&format!("/{name}")).as_slice(),
                [Ok(_)] | [Err(_)]
            ));
        }
        // Every example in the help is itself a valid command.
        for (_, _, _, examples) in COMMANDS {
            for example in *examples {
                assert!(
                    matches!(parse_commands(example).as_slice(), [Ok(_)]),
                    "{example}"
                );
            }
        }
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90m"), Some(5_400));
        assert_eq!(d("2d"), Some(172_800));
        assert_eq!(d("1w"), Some(604_800));
        assert_eq!(d("12h"), Some(43_200));
        assert_eq!(d("3d12h"), Some(302_400));
        assert_eq!(d(" 1d 12h "), Some(129_600));
        assert_eq!(d("2 days"), Some(172_800));
        assert_eq!(d("1H30M"), None, "`M` is ambiguous");
        assert_eq!(d("1h30m"), Some(5_400));
        assert_eq!(d("45s"), Some(45));
        for bad in [
            "",
            "0m",
            "0d0h",
            "5",
            "d",
            "1x",
            "1.5h",
            "-1d",
            "1d,2h",
            "5300w",
            "99999999999999999999s",
            "18446744073709551615w",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_duration("5214w"),
            Some(Duration::from_secs(5214 * 604_800))
        );
        let f = |s| format_duration(Duration::from_secs(s));
        assert_eq!(f(172_800), "2d");
        assert_eq!(f(129_600), "1d 12h");
        assert_eq!(f(5_400), "1h 30m");
        assert_eq!(f(604_800), "7d");
        assert_eq!(f(0), "0s");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s");
    }

    #[test]
    fn range_lookup() {
        let ranges = merged(vec![10..20, 0..5, 12..30, 40..41]);
        assert_eq!(ranges, vec![0..5, 10..30, 40..41]);
        for (at, want) in [
            (0, true),
            (5, false),
            (9, false),
            (10, true),
            (29, true),
            (30, false),
            (40, true),
            (41, false),
        ] {
            assert_eq!(covers(&ranges, at), want, "{at}");
        }
        assert!(!covers(&[], 0));
        // A line start inside a link, after a code span that ended inside the same link.
        assert!(parse_commands("[`x`\n/stage](https://example.com)").is_empty());
    }

    #[test]
    fn large_comments_are_fast() {
        let body = "`a`\n/x\n".repeat(8_000);
        let started = std::time::Instant::now();
        assert_eq!(parse_commands(&body).len(), 8_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(osa_distance("stgae", "stage"), 1);
        assert_eq!(osa_distance("", "help"), 4);
        assert_eq!(osa_distance("status", "status"), 0);
        assert_eq!(closest("sta", ["stage", "status"]), Some("stage"));
        assert_eq!(closest("xy", ["help"]), None);
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(secs in 1u64..=MAX_DURATION.as_secs()) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)), Some(d));
        }

        #[test]
        fn any_text_is_safe(body in "\\PC{0,300}") {
            let _ = parse_commands(&body);
        }

        #[test]
        fn markdownish_text_is_safe(body in "([ \t>`~*#/\\-\\[\\]\n\r]|/stage|/promote prod|```|\\w){0,120}") {
            for result in parse_commands(&body) {
                if let Err(e) = result {
                    prop_assert!(!e.message().is_empty());
                }
            }
        }
    }
}
