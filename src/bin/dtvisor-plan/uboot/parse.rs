//! U-Boot's shell grammar, as boot scripts meet it.
//!
//! U-Boot runs scripts with its original "hush" parser (`common/cli_hush.c`;
//! the port of modern busybox hush is opt-in, CONFIG_HUSH_MODERN). This
//! module reproduces how that parser turns text into commands, quirks
//! included, because a pre-flight check must see the same arguments U-Boot
//! will:
//!
//! * The script is parsed and run one line at a time: an unquoted newline
//!   ends a list of commands, which runs before the next line is read.
//!   Inside quotes a newline is an ordinary character.
//! * `;` separates commands; `&&` and `||` join them. A lone `&` or `|` is
//!   a syntax error (U-Boot has neither background jobs nor pipes).
//! * `#` starts a comment only at the start of a word.
//! * Outside quotes a backslash makes the next character literal, so
//!   `\#address-cells` is one word `#address-cells`. A backslash before a
//!   newline does NOT join lines: the newline is kept inside the word and
//!   the command simply goes on on the next line.
//! * Inside double quotes a backslash stays, together with the character
//!   after it (which loses any special meaning): `"a\"b"` is `a\"b`. A
//!   single quote, though, opens a single-quoted part even there (hush's
//!   character map makes `'` special everywhere): `"it's"` is a syntax
//!   error in U-Boot.
//! * Inside single quotes nothing is special, except that U-Boot later
//!   strips backslashes from every word, so `'a\b'` is `ab`.
//! * `$name`, `${name}` and `$?` are not expanded while parsing: they stay
//!   in the word between [`MARK`] characters (hush's SPECIAL_VAR_SYMBOL) and
//!   the interpreter expands them when the command runs (see `mod.rs`),
//!   also inside double quotes, never inside single quotes.
//! * `if`/`for`/`while`/`until` compounds are recognised only so that they
//!   can be skipped as a whole (one [`Job::Compound`]).

use alloc::string::String;
use alloc::vec::Vec;

/// hush's SPECIAL_VAR_SYMBOL: brackets a variable reference inside a word
/// until the command runs. Scripts containing it are refused beforehand.
pub(super) const MARK: char = '\u{3}';

/// Words per command beyond which the parser gives up (U-Boot itself
/// refuses more than CONFIG_SYS_MAXARGS, usually 64, for most commands).
pub(super) const MAX_WORDS: usize = 4096;

/// One argument: its text after quote removal (variable references still
/// between [`MARK`]s) and whether any part of it was quoted (hush's
/// `nonnull`: a quoted empty word is kept, an unquoted empty one vanishes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Word {
    pub text: String,
    pub quoted: bool,
}

/// How a command is joined to the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Follow {
    Seq,
    And,
    Or,
}

/// A simple command: its words, how many variable references the parser
/// met in it (hush's `sp`), and the line it starts on.
#[derive(Clone, Debug)]
pub(super) struct Cmd {
    pub words: Vec<Word>,
    pub vars: usize,
    pub line: usize,
}

#[derive(Clone, Debug)]
pub(super) enum Job {
    Simple(Cmd),
    /// An `if`/`for`/`while`/`until` construct, up to its `fi`/`done`.
    Compound {
        keyword: String,
        line: usize,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Pipe {
    pub job: Job,
    pub follow: Follow,
}

/// What one line (or, for `run`, one variable) parses into, with remarks
/// about constructs that do not mean what they seem to.
#[derive(Clone, Debug, Default)]
pub(super) struct List {
    pub pipes: Vec<Pipe>,
    pub notes: Vec<(usize, String)>,
}

pub(super) enum Step {
    List(List),
    End,
    Syntax { line: usize, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// A script or a variable given to `run` (FLAG_PARSE_SEMICOLON).
    Script,
    /// The second parse of a command whose variables were substituted
    /// (FLAG_REPARSING): `;`, `&`, `|` and `$` are ordinary characters and
    /// reserved words are not recognised.
    Reparse,
}

/// The word being built: hush's `o_string`. Backslash removal (U-Boot's
/// `done_word()`) is applied as characters arrive: a raw backslash makes
/// the next raw character literal.
#[derive(Default)]
struct WordBuf {
    text: String,
    /// The raw characters, for recognising reserved words exactly as hush
    /// does (it compares before removing backslashes).
    raw: String,
    pending: bool,
    any: bool,
    nonnull: bool,
    quote: bool,
    start: Option<usize>,
    quote_line: usize,
}

impl WordBuf {
    /// hush's `b_addchr()`.
    fn push_raw(&mut self, c: char) {
        self.any = true;
        if self.raw.len() < 8 {
            self.raw.push(c);
        }
        if self.pending {
            self.text.push(c);
            self.pending = false;
        } else if c == '\\' {
            self.pending = true;
        } else {
            self.text.push(c);
        }
    }

    /// hush's `b_addqchr()`: inside double quotes the glob characters and
    /// the backslash are protected by a backslash.
    fn push_q(&mut self, c: char) {
        if self.quote && matches!(c, '*' | '?' | '[' | '\\') {
            self.push_raw('\\');
        }
        self.push_raw(c);
    }

    fn mark(&mut self) {
        self.any = true;
        self.pending = false;
        self.raw.push(MARK);
        self.text.push(MARK);
    }
}

/// The command being built and the list it goes into.
#[derive(Default)]
struct Build {
    list: List,
    words: Vec<Word>,
    vars: usize,
    line: Option<usize>,
    /// Nesting of if/for/while/until, and the outermost one's keyword.
    depth: usize,
    compound: Option<(String, usize)>,
    /// The outermost compound just ended: the next separator closes it.
    compound_done: bool,
}

type Syntax = (usize, String);

pub(super) struct Parser {
    src: String,
    pos: usize,
    line: usize,
    after_nl: bool,
    mode: Mode,
    /// Parse everything as one list (`run`: FLAG_CONT_ON_NEWLINE).
    one_list: bool,
}

impl Parser {
    /// A parser over `text`, which like U-Boot's parse_string_outer() gets
    /// a final newline if it lacks one.
    pub(super) fn new(text: &str, mode: Mode, one_list: bool) -> Parser {
        let mut src = String::with_capacity(text.len() + 1);
        src.push_str(text);
        if !src.ends_with('\n') {
            src.push('\n');
        }
        Parser {
            src,
            pos: 0,
            line: 1,
            after_nl: false,
            mode,
            one_list,
        }
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn get(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if self.after_nl {
            self.line += 1;
        }
        self.after_nl = c == '\n';
        Some(c)
    }

    /// hush's character map: 0 ordinary, 1 special unless quoted, 2 field
    /// separator, 3 always special.
    fn class(&self, c: char) -> u8 {
        let script = self.mode == Mode::Script;
        match c {
            ' ' | '\t' | '\n' => 2,
            '\\' | '\'' | '"' => 3,
            '$' if script => 3,
            '#' => 1,
            ';' | '&' | '|' if script => 1,
            _ => 0,
        }
    }

    /// Parses up to the next unquoted newline outside a compound (or, with
    /// `one_list`, to the end).
    pub(super) fn next_list(&mut self) -> Step {
        match self.list() {
            Ok(step) => step,
            Err((line, message)) => Step::Syntax { line, message },
        }
    }

    fn list(&mut self) -> Result<Step, Syntax> {
        let mut b = Build::default();
        let mut w = WordBuf::default();
        loop {
            let Some(ch) = self.get() else {
                return self.at_end(b, w);
            };
            let m = self.class(ch);
            if (m != 2 || w.quote) && w.start.is_none() {
                w.start = Some(self.line);
            }
            if m == 0 || ((m == 1 || m == 2) && w.quote) {
                w.push_q(ch);
                continue;
            }
            if m == 2 {
                self.done_word(&mut b, &mut w)?;
                if ch == '\n' {
                    self.done_pipe(&mut b, Follow::Seq);
                    if b.depth == 0 && !self.one_list {
                        return Ok(Step::List(b.list));
                    }
                }
                continue;
            }
            match ch {
                '#' if !w.any && !w.quote => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.get();
                    }
                }
                '\\' => self.backslash(&mut b, &mut w)?,
                '$' => self.dollar(&mut b, &mut w)?,
                '\'' => self.single_quoted(&mut w)?,
                '"' => {
                    w.nonnull = true;
                    w.quote = !w.quote;
                    w.quote_line = self.line;
                }
                ';' => {
                    self.done_word(&mut b, &mut w)?;
                    self.done_pipe(&mut b, Follow::Seq);
                }
                '&' | '|' => self.and_or(ch, &mut b, &mut w)?,
                _ => w.push_q(ch),
            }
        }
    }

    /// A backslash: it and the character after it go into the word (a
    /// backslash-newline does not join lines in U-Boot's shell: noted).
    fn backslash(&mut self, b: &mut Build, w: &mut WordBuf) -> Result<(), Syntax> {
        let line = self.line;
        w.push_q('\\');
        let Some(c) = self.get() else {
            return Err((line, "a backslash at the end of the script".into()));
        };
        if c == '\n' && self.mode == Mode::Script {
            b.list.notes.push((
                line,
                "a backslash at the end of a line does not join lines in U-Boot's \
                 shell: the newline (and inside double quotes the backslash too) \
                 stays in the argument, and the command goes on on the next line"
                    .into(),
            ));
        }
        w.push_q(c);
        Ok(())
    }

    /// A single-quoted string, taken as it is.
    fn single_quoted(&mut self, w: &mut WordBuf) -> Result<(), Syntax> {
        let line = self.line;
        w.nonnull = true;
        loop {
            match self.get() {
                None => return Err((line, "unterminated single quote".into())),
                Some('\'') => return Ok(()),
                Some(c) => w.push_raw(c),
            }
        }
    }

    /// `&&` or `||` after a pipeline; a single `&` or `|` is an error.
    fn and_or(&mut self, ch: char, b: &mut Build, w: &mut WordBuf) -> Result<(), Syntax> {
        self.done_word(b, w)?;
        if self.peek() != Some(ch) {
            let what = if ch == '&' {
                "a single `&`: U-Boot has no background jobs"
            } else {
                "a single `|`: U-Boot has no pipes"
            };
            return Err((self.line, what.into()));
        }
        self.get();
        let follow = if ch == '&' { Follow::And } else { Follow::Or };
        self.done_pipe(b, follow);
        Ok(())
    }

    /// End of input: U-Boot runs what it has, unless a compound is open.
    fn at_end(&mut self, mut b: Build, mut w: WordBuf) -> Result<Step, Syntax> {
        if let Some((keyword, line)) = &b.compound {
            let end = if keyword == "if" { "fi" } else { "done" };
            return Err((*line, alloc::format!("`{keyword}` without `{end}`")));
        }
        if w.quote {
            b.list.notes.push((
                w.quote_line,
                "unterminated double quote: U-Boot runs the command with the rest of the \
                 script as part of its last argument"
                    .into(),
            ));
        }
        self.done_word(&mut b, &mut w)?;
        self.done_pipe(&mut b, Follow::Seq);
        let any = b
            .list
            .pipes
            .iter()
            .any(|p| !matches!(&p.job, Job::Simple(c) if c.words.is_empty()));
        Ok(if any || !b.list.notes.is_empty() {
            Step::List(b.list)
        } else {
            Step::End
        })
    }

    /// hush's `handle_dollar()`, called with the `$` consumed.
    fn dollar(&mut self, b: &mut Build, w: &mut WordBuf) -> Result<(), Syntax> {
        match self.peek() {
            Some(c) if c.is_ascii_alphabetic() => {
                w.mark();
                b.vars += 1;
                while let Some(c) = self.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_') {
                        break;
                    }
                    self.get();
                    w.push_raw(c);
                }
                w.mark();
            }
            Some('?') => {
                self.get();
                b.vars += 1;
                w.mark();
                w.push_raw('$');
                w.push_raw('?');
                w.mark();
            }
            Some('{') => {
                let line = self.line;
                self.get();
                b.vars += 1;
                w.mark();
                loop {
                    match self.get() {
                        None => return Err((line, "`${` without a closing `}`".into())),
                        Some('}') => break,
                        Some(c) => w.push_raw(c),
                    }
                }
                w.mark();
            }
            _ => w.push_q('$'),
        }
        Ok(())
    }

    /// hush's `done_word()`: a word without characters and without quotes
    /// is no word; a reserved word at the start of a command opens or
    /// closes a compound instead of becoming an argument.
    fn done_word(&mut self, b: &mut Build, w: &mut WordBuf) -> Result<(), Syntax> {
        if !w.any && !w.nonnull {
            *w = WordBuf {
                quote: w.quote,
                ..WordBuf::default()
            };
            return Ok(());
        }
        let line = w.start.unwrap_or(self.line);
        let raw = core::mem::take(&mut w.raw);
        let word = Word {
            text: core::mem::take(&mut w.text),
            quoted: w.nonnull,
        };
        *w = WordBuf {
            quote: w.quote,
            ..WordBuf::default()
        };
        if b.compound_done {
            return Err((
                line,
                alloc::format!("`{}` after the end of a compound", word.text),
            ));
        }
        if b.words.is_empty() && self.mode == Mode::Script {
            match raw.as_str() {
                "if" | "for" | "while" | "until" => {
                    if b.depth == 0 {
                        b.compound = Some((raw, line));
                    }
                    b.depth += 1;
                    return Ok(());
                }
                "then" | "elif" | "else" | "do" | "in" | "fi" | "done" if b.depth == 0 => {
                    return Err((line, alloc::format!("`{raw}` outside an if/for/while")));
                }
                "fi" | "done" => {
                    b.depth -= 1;
                    if b.depth == 0 {
                        b.compound_done = true;
                    }
                    return Ok(());
                }
                "then" | "elif" | "else" | "do" | "in" => return Ok(()),
                _ => {}
            }
        }
        if b.words.is_empty() {
            b.line = Some(line);
        }
        if b.words.len() >= MAX_WORDS {
            return Err((
                line,
                alloc::format!("more than {MAX_WORDS} words in one command"),
            ));
        }
        b.words.push(word);
        Ok(())
    }

    /// hush's `done_pipe()`: closes the command with its separator.
    fn done_pipe(&mut self, b: &mut Build, follow: Follow) {
        let words = core::mem::take(&mut b.words);
        let vars = core::mem::take(&mut b.vars);
        let line = b.line.take().unwrap_or(self.line);
        if b.compound_done {
            b.compound_done = false;
            if let Some((keyword, line)) = b.compound.take() {
                b.list.pipes.push(Pipe {
                    job: Job::Compound { keyword, line },
                    follow,
                });
            }
            return;
        }
        if b.depth > 0 {
            return;
        }
        b.list.pipes.push(Pipe {
            job: Job::Simple(Cmd { words, vars, line }),
            follow,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// The words of every simple command of the first list.
    fn words(src: &str) -> Vec<Vec<(String, bool)>> {
        match Parser::new(src, Mode::Script, false).next_list() {
            Step::List(l) => l
                .pipes
                .into_iter()
                .filter_map(|p| match p.job {
                    Job::Simple(c) if !c.words.is_empty() => {
                        Some(c.words.into_iter().map(|w| (w.text, w.quoted)).collect())
                    }
                    _ => None,
                })
                .collect(),
            Step::End => vec![],
            Step::Syntax { message, .. } => panic!("syntax error: {message}"),
        }
    }

    fn texts(src: &str) -> Vec<Vec<String>> {
        words(src)
            .into_iter()
            .map(|c| c.into_iter().map(|(t, _)| t).collect())
            .collect()
    }

    #[test]
    fn quoting_rules() {
        assert_eq!(texts("a 'b c' \"d e\""), [["a", "b c", "d e"]]);
        assert_eq!(
            texts(r"fdt set / \#size-cells <1>"),
            [["fdt", "set", "/", "#size-cells", "<1>"]]
        );
        assert_eq!(texts(r#"echo "a\"b" x"#), [["echo", r#"a\"b"#, "x"]]);
        assert_eq!(texts(r"echo 'a\b' 'c\\d'"), [["echo", "ab", r"c\d"]]);
        assert_eq!(texts("echo a#b #comment"), [["echo", "a#b"]]);
        assert_eq!(texts("echo \"#x\" '#y'"), [["echo", "#x", "#y"]]);
        assert_eq!(texts("echo a'b'\"c\"d"), [["echo", "abcd"]]);
        assert_eq!(texts("echo \"\" ''"), [["echo", "", ""]]);
        assert_eq!(words("echo \"\"")[0][1], (String::new(), true));
    }

    #[test]
    fn separators_and_lines() {
        let mut p = Parser::new(
            "a; b && c || d\n  # only a comment\ne \"x\ny\"\n",
            Mode::Script,
            false,
        );
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        let follows: Vec<_> = l
            .pipes
            .iter()
            .filter(|p| matches!(&p.job, Job::Simple(c) if !c.words.is_empty()))
            .map(|p| p.follow)
            .collect();
        assert_eq!(follows, [Follow::Seq, Follow::And, Follow::Or, Follow::Seq]);
        assert!(matches!(p.next_list(), Step::List(_))); // the comment line
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        let Job::Simple(c) = &l.pipes[0].job else {
            panic!()
        };
        assert_eq!(c.line, 3);
        assert_eq!(c.words[1].text, "x\ny");
        assert!(matches!(p.next_list(), Step::End));
    }

    #[test]
    fn variables_stay_marked() {
        let m = MARK;
        let mut p = Parser::new(
            "load mmc ${devnum}:1 $kernel_addr_r \"$a.b\" '$c' \\$d $? $",
            Mode::Script,
            false,
        );
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        let Job::Simple(c) = &l.pipes[0].job else {
            panic!()
        };
        let t: Vec<_> = c.words.iter().map(|w| w.text.as_str()).collect();
        let expect = [
            "load".to_string(),
            "mmc".into(),
            alloc::format!("{m}devnum{m}:1"),
            alloc::format!("{m}kernel_addr_r{m}"),
            alloc::format!("{m}a{m}.b"),
            "$c".into(),
            "$d".into(),
            alloc::format!("{m}$?{m}"),
            "$".into(),
        ];
        assert_eq!(t, expect);
        assert_eq!(c.vars, 4);
    }

    #[test]
    fn backslash_newline_keeps_the_newline() {
        let mut p = Parser::new("setenv a x \\\ny\nnext\n", Mode::Script, false);
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        let Job::Simple(c) = &l.pipes[0].job else {
            panic!()
        };
        let t: Vec<_> = c.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["setenv", "a", "x", "\ny"]);
        assert_eq!(l.notes.len(), 1);
        assert!(matches!(p.next_list(), Step::List(_)));
    }

    #[test]
    fn reparse_mode_has_no_separators() {
        let mut p = Parser::new("echo a;b $x 'c d' #gone\nnot read\n", Mode::Reparse, false);
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        let Job::Simple(c) = &l.pipes[0].job else {
            panic!()
        };
        let t: Vec<_> = c.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["echo", "a;b", "$x", "c d"]);
        assert_eq!(c.vars, 0);
    }

    #[test]
    fn compounds_are_one_job() {
        let src = "if test -e x; then\n  if a; then b; fi\nelse c; fi; echo after\nnext\n";
        let mut p = Parser::new(src, Mode::Script, false);
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        assert!(matches!(&l.pipes[0].job, Job::Compound { keyword, line: 1 } if keyword == "if"));
        assert!(matches!(&l.pipes[1].job, Job::Simple(c) if c.words[0].text == "echo"));
        assert!(matches!(p.next_list(), Step::List(_)));
        // A quoted or escaped keyword is an ordinary word.
        assert_eq!(texts("\\if x"), [["if", "x"]]);
        assert_eq!(texts("echo if fi"), [["echo", "if", "fi"]]);
    }

    #[test]
    fn syntax_errors() {
        for (src, line) in [
            ("echo 'open\n\n", 1),
            ("echo ${open\n", 1),
            ("a & b\n", 1),
            ("a | b\n", 1),
            ("\nfi\n", 2),
            ("while true; do x\n", 1),
            ("if a; then b; fi c\n", 1),
        ] {
            let mut p = Parser::new(src, Mode::Script, false);
            let mut step = p.next_list();
            while let Step::List(_) = step {
                step = p.next_list();
            }
            match step {
                Step::Syntax { line: l, .. } => assert_eq!(l, line, "{src:?}"),
                _ => panic!("{src:?} parsed"),
            }
        }
    }

    #[test]
    fn unterminated_double_quote_runs_with_a_note() {
        let mut p = Parser::new("echo \"open\nrest", Mode::Script, false);
        let Step::List(l) = p.next_list() else {
            panic!()
        };
        let Job::Simple(c) = &l.pipes[0].job else {
            panic!()
        };
        assert_eq!(c.words[1].text, "open\nrest\n");
        assert_eq!(l.notes.len(), 1);
    }
}
