//! What correct output looks like, written once and used by the property
//! tests and the fuzz targets alike.

use std::fmt;

use crate::event::{Event, Request};
use crate::maildrop::MessageRef;
use crate::Config;

/// A broken invariant, with enough context to debug it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvariantError(pub String);

impl fmt::Display for InvariantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvariantError {}

fn fail<T>(msg: String) -> Result<T, InvariantError> {
    Err(InvariantError(msg))
}

/// The body as it travels before dot-stuffing: every line end CRLF (a bare
/// LF becomes CRLF, a CR at the very end ends the last line), and a last
/// line without a line end gets CRLF. A CR not followed by LF elsewhere is
/// content. Its length is the RFC 1939 message size.
pub fn normalize_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\n' if i == 0 || body[i - 1] != b'\r' => out.extend_from_slice(b"\r\n"),
            b'\r' if i + 1 == body.len() => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Undoes dot-stuffing: strips the final `.` CRLF and one leading `.` from
/// each line that starts with one.
pub fn unstuff(stuffed: &[u8]) -> Result<Vec<u8>, InvariantError> {
    let Some(body) = stuffed.strip_suffix(b".\r\n") else {
        return fail(format!(
            "output does not end with the terminator: {}",
            super::escape_bytes(&stuffed[stuffed.len().saturating_sub(20)..])
        ));
    };
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        match line.strip_prefix(b".") {
            Some(rest) => {
                if !rest.starts_with(b".") {
                    return fail(format!(
                        "a line starts with a single dot: {}",
                        super::escape_bytes(line)
                    ));
                }
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    Ok(out)
}

/// Checks a stuffed RETR response body against the original body: it ends
/// with the one terminator, has no bare LF and no early terminator, and
/// unstuffs to the normalized body.
pub fn check_stuffed(body: &[u8], stuffed: &[u8]) -> Result<(), InvariantError> {
    check_framing(stuffed)?;
    let unstuffed = unstuff(stuffed)?;
    let expected = normalize_body(body);
    if unstuffed != expected {
        return fail(format!(
            "unstuffed output differs from the normalized body\n got: {}\nwant: {}",
            super::escape_bytes(&unstuffed),
            super::escape_bytes(&expected)
        ));
    }
    Ok(())
}

/// The TOP response body RFC 1939 §7 asks for, before stuffing: the header
/// section, the blank line, then `min(k, body lines)` body lines. A message
/// with no blank line is all headers.
pub fn expected_top(body: &[u8], k: u64) -> Vec<u8> {
    let normalized = normalize_body(body);
    let mut out = Vec::new();
    let mut in_headers = true;
    let mut left = k;
    for line in normalized.split_inclusive(|&b| b == b'\n') {
        if in_headers {
            out.extend_from_slice(line);
            if line == b"\r\n" {
                in_headers = false;
                if left == 0 {
                    break;
                }
            }
        } else {
            if left == 0 {
                break;
            }
            out.extend_from_slice(line);
            left -= 1;
        }
    }
    out
}

/// Checks a stuffed `TOP n k` response body: well framed, a prefix of the
/// RETR output, and exactly the expected header and body lines.
pub fn check_top(body: &[u8], k: u64, top: &[u8], retr: &[u8]) -> Result<(), InvariantError> {
    check_framing(top)?;
    let top_content = &top[..top.len() - 3];
    if !retr.starts_with(top_content) {
        return fail(format!(
            "TOP {k} output is not a prefix of RETR output\n top: {}",
            super::escape_bytes(top)
        ));
    }
    let unstuffed = unstuff(top)?;
    let expected = expected_top(body, k);
    if unstuffed != expected {
        return fail(format!(
            "TOP {k} sent the wrong lines\n got: {}\nwant: {}",
            super::escape_bytes(&unstuffed),
            super::escape_bytes(&expected)
        ));
    }
    Ok(())
}

/// Ends with `.` CRLF, which is the only terminator, and has no bare LF.
fn check_framing(stuffed: &[u8]) -> Result<(), InvariantError> {
    if !stuffed.ends_with(b".\r\n") || !(stuffed.len() == 3 || stuffed.ends_with(b"\r\n.\r\n")) {
        return fail(format!(
            "missing terminator: {}",
            super::escape_bytes(&stuffed[stuffed.len().saturating_sub(20)..])
        ));
    }
    let early = memchr::memmem::find(stuffed, b"\r\n.\r\n")
        .filter(|&at| at + 5 != stuffed.len())
        .or_else(|| (stuffed.starts_with(b".\r\n") && stuffed.len() != 3).then_some(0));
    if let Some(at) = early {
        return fail(format!("early terminator at octet {at}"));
    }
    if let Some(at) = stuffed
        .iter()
        .enumerate()
        .position(|(i, &b)| b == b'\n' && (i == 0 || stuffed[i - 1] != b'\r'))
    {
        return fail(format!("bare LF at octet {at}"));
    }
    Ok(())
}

// ---- the session as a client sees it ----

/// RFC 2449 §4: a status line (or a `+ ` challenge) is at most 512 octets
/// with its CRLF.
pub const MAX_RESPONSE_LINE: usize = 512;

/// One multi-line response the client received, with the command it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiLine {
    /// The command line (without its line end).
    pub command: Vec<u8>,
    /// The status line, CRLF included.
    pub status: Vec<u8>,
    /// What followed the status line, still stuffed, up to and including
    /// the terminating `.` CRLF when it is complete.
    pub stuffed: Vec<u8>,
    /// The terminator arrived.
    pub complete: bool,
}

/// What kind of response the next status line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The greeting.
    Greeting,
    /// A status line (or a challenge).
    Status,
    /// The lines of a multi-line response, up to `.` CRLF.
    Multi,
    /// Nothing ever again: the session said goodbye.
    Nothing,
}

/// Follows a conversation the way a POP3 client would and checks the
/// session's side of it: output comes in whole CRLF lines outside bodies;
/// each command line gets exactly one response, in order (a `+ ` challenge
/// only to `AUTH` or a SASL response, and then the next line is a SASL
/// response); a status line starts `+OK` or `-ERR` and fits RFC 2449's
/// 512 octets; a multi-line response (CAPA, LIST and UIDL without an
/// argument, RETR, TOP, AUTH and LANG without an argument) is dot-stuffed
/// and ends at its one terminator, so nothing of a body can be taken for
/// the next response; nothing follows the QUIT farewell.
///
/// It also keeps what deletion depends on: the login, the `DELE` and
/// `RSET` marks, and whether `QUIT` was sent in TRANSACTION; see
/// [`ReplyChecker::check_commits`].
///
/// Give it the client's bytes with [`ReplyChecker::client`] as they are
/// handed to the session (one read each), and what the session sent with
/// [`ReplyChecker::server`] after every read and every answer, before the
/// next read: that is what lets it tell which input an `STLS` throws away
/// (everything received before its `+OK` went out).
#[derive(Debug)]
pub struct ReplyChecker {
    /// Client bytes after the last complete line.
    partial: Vec<u8>,
    /// Complete client lines not answered yet, oldest first.
    pending: std::collections::VecDeque<Vec<u8>>,
    /// Server bytes after the last complete line.
    out: Vec<u8>,
    expect: Expect,
    /// A `+ ` challenge is out: the next client line is a SASL response.
    sasl: bool,
    logged_in: bool,
    marks: std::collections::BTreeSet<u32>,
    /// The last line answered was `QUIT` in TRANSACTION (marks as they were).
    quit_answered: bool,
    bodies: Vec<MultiLine>,
    responses: usize,
}

impl Default for ReplyChecker {
    fn default() -> Self {
        Self::new()
    }
}

/// The keyword of a command line and the number of argument words.
fn keyword(line: &[u8]) -> (&[u8], usize) {
    let (kw, rest) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let args = rest.split(|&b| b == b' ').filter(|w| !w.is_empty()).count();
    (kw, args)
}

fn is_kw(kw: &[u8], name: &str) -> bool {
    kw.eq_ignore_ascii_case(name.as_bytes())
}

/// The first argument as a message number, if it is one.
fn first_number(line: &[u8]) -> Option<u32> {
    let word = line
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .nth(1)?;
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

impl ReplyChecker {
    /// A checker expecting the greeting first.
    pub fn new() -> Self {
        Self {
            partial: Vec::new(),
            pending: std::collections::VecDeque::new(),
            out: Vec::new(),
            expect: Expect::Greeting,
            sasl: false,
            logged_in: false,
            marks: std::collections::BTreeSet::new(),
            quit_answered: false,
            bodies: Vec::new(),
            responses: 0,
        }
    }

    /// Bytes the client sent (one read as the session got it).
    pub fn client(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(lf) = memchr::memchr(b'\n', rest) {
            self.partial.extend_from_slice(&rest[..lf]);
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.pending.push_back(line);
            rest = &rest[lf + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// Bytes the session sent, in order.
    pub fn server(&mut self, bytes: &[u8]) -> Result<(), InvariantError> {
        self.out.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(lf) = memchr::memchr(b'\n', &self.out[at..]) {
            let line = self.out[at..at + lf + 1].to_vec();
            at += lf + 1;
            self.line(&line)?;
        }
        self.out.drain(..at);
        if self.expect == Expect::Nothing && !self.out.is_empty() {
            return fail(format!(
                "output after the session said goodbye: {}",
                super::escape_bytes(&self.out)
            ));
        }
        if self.expect != Expect::Multi && self.out.len() > MAX_RESPONSE_LINE {
            return fail(format!(
                "a status line longer than {MAX_RESPONSE_LINE} octets: {}",
                super::escape_bytes(&self.out[..80])
            ));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), InvariantError> {
        let shown = || super::escape_bytes(line);
        if !line.ends_with(b"\r\n") {
            return fail(format!("a line ends with a bare LF: {}", shown()));
        }
        match self.expect {
            Expect::Nothing => fail(format!(
                "output after the session said goodbye: {}",
                shown()
            )),
            Expect::Multi => {
                let body = self
                    .bodies
                    .last_mut()
                    .expect("a multi-line response is open");
                body.stuffed.extend_from_slice(line);
                if line == b".\r\n" {
                    body.complete = true;
                    self.expect = Expect::Status;
                } else if line.starts_with(b".") && !line.starts_with(b"..") {
                    return fail(format!(
                        "a line of a multi-line response starts with a single dot: {}",
                        shown()
                    ));
                }
                Ok(())
            }
            Expect::Greeting | Expect::Status => self.status(line),
        }
    }

    fn status(&mut self, line: &[u8]) -> Result<(), InvariantError> {
        let shown = || super::escape_bytes(line);
        if line.len() > MAX_RESPONSE_LINE {
            return fail(format!(
                "a status line longer than {MAX_RESPONSE_LINE} octets: {}",
                shown()
            ));
        }
        let ok = line.starts_with(b"+OK ") || line == b"+OK\r\n";
        let err = line.starts_with(b"-ERR ") || line == b"-ERR\r\n";
        let challenge = line.starts_with(b"+ ") || line == b"+\r\n";
        if !(ok || err || challenge) {
            return fail(format!(
                "a response that is neither +OK, -ERR nor a challenge: {}",
                shown()
            ));
        }
        self.responses += 1;
        if self.expect == Expect::Greeting {
            if challenge {
                return fail(format!("a challenge as the greeting: {}", shown()));
            }
            self.expect = if ok { Expect::Status } else { Expect::Nothing };
            return Ok(());
        }
        // A response with no command waiting is the session's own: a
        // shutdown or internal error closing it, always -ERR.
        let in_sasl = self.sasl;
        let Some(command) = self.pending.pop_front() else {
            if !err {
                return fail(format!("a response to no command: {}", shown()));
            }
            self.expect = Expect::Nothing;
            return Ok(());
        };
        let (kw, args) = keyword(&command);
        self.quit_answered = !in_sasl && self.logged_in && is_kw(kw, "QUIT") && args == 0;
        if challenge {
            if !(in_sasl || (is_kw(kw, "AUTH") && args >= 1)) {
                return fail(format!(
                    "a challenge in answer to {}: {}",
                    super::escape_bytes(&command),
                    shown()
                ));
            }
            self.sasl = true;
            return Ok(());
        }
        self.sasl = false;
        if in_sasl {
            if command == b"*" && ok {
                return fail("a cancelled SASL exchange succeeded".to_owned());
            }
            if ok {
                self.logged_in = true;
            }
            return Ok(());
        }
        if !ok {
            return Ok(());
        }
        let multi = is_kw(kw, "RETR")
            || is_kw(kw, "TOP")
            || is_kw(kw, "CAPA")
            || (args == 0
                && ["LIST", "UIDL", "AUTH", "LANG"]
                    .iter()
                    .any(|k| is_kw(kw, k)));
        if multi {
            self.bodies.push(MultiLine {
                command: command.clone(),
                status: line.to_vec(),
                stuffed: Vec::new(),
                complete: false,
            });
            self.expect = Expect::Multi;
        } else if is_kw(kw, "PASS") || is_kw(kw, "APOP") || is_kw(kw, "AUTH") {
            self.logged_in = true;
        } else if is_kw(kw, "QUIT") {
            self.expect = Expect::Nothing;
        } else if is_kw(kw, "STLS") {
            // RFC 2595 §4: what came after STLS is thrown away.
            self.pending.clear();
            self.partial.clear();
        } else if self.logged_in && is_kw(kw, "DELE") {
            match first_number(&command) {
                Some(n) => {
                    self.marks.insert(n);
                }
                None => {
                    return fail(format!(
                        "+OK to a DELE without a message number: {}",
                        super::escape_bytes(&command)
                    ))
                }
            }
        } else if self.logged_in && is_kw(kw, "RSET") {
            self.marks.clear();
        }
        Ok(())
    }

    /// Checks the end of the conversation: the output stopped at a line
    /// boundary, outside any multi-line response, unless `cut_ok` (the
    /// session closed on a handler failure or a lost connection, or a body
    /// is still being sent).
    pub fn finish(&self, cut_ok: bool) -> Result<(), InvariantError> {
        if cut_ok {
            return Ok(());
        }
        if self.expect == Expect::Multi {
            let body = self.bodies.last().expect("a multi-line response is open");
            return fail(format!(
                "the output stopped inside the response to {}",
                super::escape_bytes(&body.command)
            ));
        }
        if !self.out.is_empty() {
            return fail(format!(
                "the output stopped in the middle of a line: {}",
                super::escape_bytes(&self.out)
            ));
        }
        Ok(())
    }

    /// The multi-line responses received so far.
    pub fn multi_lines(&self) -> &[MultiLine] {
        &self.bodies
    }

    /// Responses received so far (greeting and challenges included).
    pub fn responses(&self) -> usize {
        self.responses
    }

    /// True once a login succeeded (a `+OK` to PASS, APOP or AUTH).
    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// True if `QUIT` was sent after the login and is the line answered
    /// last or the next one waiting: the only time a commit may happen.
    pub fn quit_after_login(&self) -> bool {
        let waiting_quit = self.logged_in
            && !self.sasl
            && self
                .pending
                .front()
                .is_some_and(|l| l.eq_ignore_ascii_case(b"QUIT"));
        self.quit_answered || waiting_quit
    }

    /// True if `QUIT` was sent after the login and not answered yet, behind
    /// other unanswered lines or not: a session that took pipelined lines
    /// and QUIT in one read commits before it writes their replies, and a
    /// write that then fails loses them all.
    pub fn quit_sent_after_login(&self) -> bool {
        self.logged_in && !self.sasl && self.pending.iter().any(|l| l.eq_ignore_ascii_case(b"QUIT"))
    }

    /// The message numbers marked with `DELE` since the login or the last `RSET`.
    pub fn marked(&self) -> Vec<u32> {
        self.marks.iter().copied().collect()
    }

    /// Checks every complete RETR and TOP response against the maildrop as
    /// it was at login (`messages[n - 1]` is message `n`), with
    /// [`check_stuffed`] and [`check_top`], and the octet count in
    /// RETR's status line against the RFC 1939 size.
    pub fn check_bodies(&self, messages: &[&[u8]]) -> Result<(), InvariantError> {
        for m in self.bodies.iter().filter(|m| m.complete) {
            let (kw, _) = keyword(&m.command);
            let retr = is_kw(kw, "RETR");
            if !(retr || is_kw(kw, "TOP")) {
                continue;
            }
            let context = |e: InvariantError| {
                InvariantError(format!("{}: {e}", super::escape_bytes(&m.command)))
            };
            let n = first_number(&m.command)
                .ok_or_else(|| context(InvariantError("+OK without a message number".into())))?;
            let Some(body) = (n as usize).checked_sub(1).and_then(|i| messages.get(i)) else {
                return Err(context(InvariantError(format!(
                    "+OK for message {n}, which does not exist"
                ))));
            };
            if retr {
                let size = normalize_body(body).len();
                if !m
                    .status
                    .starts_with(format!("+OK {size} octets").as_bytes())
                {
                    return Err(context(InvariantError(format!(
                        "status {} does not give the size {size}",
                        super::escape_bytes(&m.status)
                    ))));
                }
                check_stuffed(body, &m.stuffed).map_err(context)?;
            } else {
                let k = m
                    .command
                    .split(|&b| b == b' ')
                    .filter(|w| !w.is_empty())
                    .nth(2)
                    .and_then(|w| std::str::from_utf8(w).ok()?.parse::<u64>().ok())
                    .ok_or_else(|| {
                        context(InvariantError("+OK to TOP without a line count".into()))
                    })?;
                let retr = super::encode_body(&[body], None);
                check_top(body, k, &m.stuffed, &retr).map_err(context)?;
            }
        }
        Ok(())
    }

    /// Deletion only at QUIT: at most one `Commit` request among `events`,
    /// only after a `QUIT` sent after the login (the line answered last or
    /// the next one waiting), asking to delete exactly the messages marked
    /// with `DELE` (since the last `RSET`).
    pub fn check_commits(&self, events: &[Event]) -> Result<(), InvariantError> {
        let commits: Vec<&Vec<MessageRef>> = events
            .iter()
            .filter_map(|e| match e {
                Event::Request(Request::Commit { deleted }) => Some(deleted),
                _ => None,
            })
            .collect();
        match commits.as_slice() {
            [] => Ok(()),
            [deleted] => {
                if !self.quit_after_login() {
                    return fail(format!("a commit without QUIT: {deleted:?}"));
                }
                let numbers: Vec<u32> = deleted.iter().map(|m| m.number).collect();
                let marked = self.marked();
                if numbers != marked {
                    return fail(format!(
                        "QUIT deletes {numbers:?}, but {marked:?} were marked"
                    ));
                }
                Ok(())
            }
            more => fail(format!("{} commits in one session", more.len())),
        }
    }
}

/// The maildrop after the session: unchanged, or (after the commits the
/// store carried out, each a list of unique ids) without exactly those.
pub fn check_store_after(
    before: &[super::StoredMessage],
    after: &[super::StoredMessage],
    commits: &[Vec<String>],
) -> Result<(), InvariantError> {
    let expected: Vec<&super::StoredMessage> = before
        .iter()
        .filter(|m| !commits.iter().flatten().any(|uid| *uid == m.uid))
        .collect();
    let after: Vec<&super::StoredMessage> = after.iter().collect();
    if after != expected {
        let uids =
            |v: &[&super::StoredMessage]| v.iter().map(|m| m.uid.clone()).collect::<Vec<_>>();
        return fail(format!(
            "the maildrop holds {:?}, expected {:?} (commits {commits:?})",
            uids(&after),
            uids(&expected)
        ));
    }
    Ok(())
}

/// Exactly one unlock per lock: `Closed` at most once and last; the store's
/// unlocks match the `Unlock` events; once closed every lock taken
/// (`locks`) was released (`unlocks`), and before that at most one is held.
pub fn check_locks(
    events: &[Event],
    locks: usize,
    unlocks: usize,
    closed: bool,
) -> Result<(), InvariantError> {
    let closes = events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    if closes > 1 || (closes == 1 && !matches!(events.last(), Some(Event::Closed(_)))) {
        return fail(format!("Closed is not the one last event: {events:?}"));
    }
    if closed != (closes == 1) {
        return fail(format!("closed is {closed}, but {closes} Closed events"));
    }
    let unlock_events = events.iter().filter(|e| **e == Event::Unlock).count();
    if unlock_events != unlocks {
        return fail(format!(
            "{unlock_events} Unlock events, {unlocks} unlocks in the store"
        ));
    }
    let ok = if closed {
        locks == unlocks
    } else {
        unlocks <= locks && locks <= unlocks + 1
    };
    if !ok {
        return fail(format!(
            "{locks} locks and {unlocks} unlocks (closed: {closed})"
        ));
    }
    Ok(())
}

/// Bounded buffers: the input held never exceeds the input buffer (or the
/// SASL line limit while a SASL line is read) plus one read of `read`
/// octets; the output held never exceeds the high-water mark plus two
/// body chunks of `chunk` octets plus one reply line (1024).
pub fn check_buffer_bounds(
    config: &Config,
    read: usize,
    chunk: usize,
    peak_input: usize,
    peak_output: usize,
) -> Result<(), InvariantError> {
    let input = config.input_buffer.max(config.max_sasl_line) + read;
    if peak_input > input {
        return fail(format!(
            "peak input {peak_input} > {input} (input buffer {}, SASL line {}, read {read})",
            config.input_buffer, config.max_sasl_line
        ));
    }
    let output = config.output_high_water + 2 * chunk + 1024;
    if peak_output > output {
        return fail(format!(
            "peak output {peak_output} > {output} (high-water {}, chunk {chunk})",
            config.output_high_water
        ));
    }
    Ok(())
}

/// Checks the command parser on one line (without its line end): if it
/// parses, the command printed back as a line parses to the same command,
/// and the keyword's case changes nothing.
pub fn check_command_line(line: &[u8]) -> Result<(), InvariantError> {
    let parsed = crate::command::parse(line);
    let end = memchr::memchr(b' ', line).unwrap_or(line.len());
    let mut flipped = line.to_vec();
    for b in &mut flipped[..end] {
        if b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
    if crate::command::parse(&flipped) != parsed {
        return fail(format!(
            "the keyword's case changes the parse of {}",
            super::escape_bytes(line)
        ));
    }
    let Ok(command) = parsed else {
        return Ok(());
    };
    let printed = command.to_line();
    match crate::command::parse(&printed) {
        Ok(again) if again == command => Ok(()),
        other => fail(format!(
            "{} parses to {command:?}, printed as {}, which parses to {other:?}",
            super::escape_bytes(line),
            super::escape_bytes(&printed)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize_body(b""), b"");
        assert_eq!(normalize_body(b"a"), b"a\r\n");
        assert_eq!(normalize_body(b"a\nb\r\nc\r"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalize_body(b"a\rb"), b"a\rb\r\n");
    }

    #[test]
    fn checks_catch_bugs() {
        assert!(check_stuffed(b".x\r\n", b"..x\r\n.\r\n").is_ok());
        assert!(check_stuffed(b".x\r\n", b".x\r\n.\r\n").is_err());
        assert!(check_stuffed(b"a\r\n.\r\nb\r\n", b"a\r\n.\r\nb\r\n.\r\n").is_err());
        assert!(check_stuffed(b"a\nb", b"a\nb\r\n.\r\n").is_err());
        assert!(check_stuffed(b"a", b"a\r\n").is_err());
    }

    #[test]
    fn top_expectations() {
        let m = b"H: 1\r\n\r\nb1\r\nb2\r\n";
        assert_eq!(expected_top(m, 0), b"H: 1\r\n\r\n");
        assert_eq!(expected_top(m, 1), b"H: 1\r\n\r\nb1\r\n");
        assert_eq!(expected_top(m, 9), m);
        assert_eq!(expected_top(b"H: 1\r\nG: 2", 3), b"H: 1\r\nG: 2\r\n");
    }

    fn conversation(client: &[u8], server: &[u8]) -> Result<ReplyChecker, InvariantError> {
        let mut c = ReplyChecker::new();
        c.server(b"+OK ready\r\n")?;
        c.client(client);
        c.server(server)?;
        Ok(c)
    }

    #[test]
    fn a_quit_behind_unanswered_lines_counts_as_sent_not_answered() {
        let c = conversation(
            b"USER a\r\nPASS b\r\nNOOP\r\n\r\nQUIT\r\n",
            b"+OK\r\n+OK in\r\n",
        )
        .unwrap();
        assert!(!c.quit_after_login(), "QUIT is not the next line answered");
        assert!(c.quit_sent_after_login());
        let before = conversation(b"USER a\r\nQUIT\r\n", b"+OK\r\n").unwrap();
        assert!(!before.quit_sent_after_login(), "not logged in");
    }

    #[test]
    fn reply_checker_follows_a_conversation() {
        let c = conversation(
            b"USER a\r\nPASS b\r\nLIST\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n",
            b"+OK\r\n+OK in\r\n+OK\r\n1 4\r\n.\r\n+OK 4 octets\r\n..a\r\n.\r\n+OK\r\n+OK bye\r\n",
        )
        .unwrap();
        c.finish(false).unwrap();
        assert_eq!(c.marked(), [1]);
        assert!(c.quit_after_login());
        c.check_bodies(&[b".a"]).unwrap();
        assert!(c.check_bodies(&[b"a"]).is_err());
        let commit = |n: u32| {
            vec![Event::Request(Request::Commit {
                deleted: vec![MessageRef {
                    number: n,
                    uid: crate::Uid::new("u").unwrap(),
                    size: 4,
                }],
            })]
        };
        c.check_commits(&commit(1)).unwrap();
        assert!(c.check_commits(&commit(2)).is_err());
    }

    #[test]
    fn reply_checker_catches_framing_bugs() {
        // A bare LF, a stray dot line, a body line after the terminator.
        assert!(conversation(b"NOOP\r\n", b"+OK\n").is_err());
        assert!(conversation(b"CAPA\r\n", b"+OK\r\n.x\r\n.\r\n").is_err());
        assert!(conversation(b"CAPA\r\n", b"+OK\r\n.\r\nTOP\r\n").is_err());
        // Output after the farewell; a challenge to a command that is not AUTH.
        assert!(conversation(b"QUIT\r\n", b"+OK bye\r\n-ERR\r\n").is_err());
        assert!(conversation(b"STAT\r\n", b"+ \r\n").is_err());
        // STLS throws away what followed it.
        let c = conversation(b"STLS\r\nUSER x\r\n", b"+OK begin\r\n").unwrap();
        c.finish(false).unwrap();
        // A body cut short, a line cut short.
        let c = conversation(b"RETR 1\r\n", b"+OK 3 octets\r\na\r\n").unwrap();
        assert!(c.finish(false).is_err());
        assert!(c.finish(true).is_ok());
        let c = conversation(b"NOOP\r\n", b"+OK").unwrap();
        assert!(c.finish(false).is_err());
        // A commit without QUIT.
        let c = conversation(b"USER a\r\nPASS b\r\n", b"+OK\r\n+OK\r\n").unwrap();
        let commit = [Event::Request(Request::Commit { deleted: vec![] })];
        assert!(c.check_commits(&commit).is_err());
    }

    #[test]
    fn lock_and_store_checks() {
        let closed = [Event::Unlock, Event::Closed(crate::CloseReason::Quit)];
        check_locks(&closed, 1, 1, true).unwrap();
        assert!(check_locks(&closed, 2, 1, true).is_err());
        assert!(check_locks(&closed[..1], 1, 1, true).is_err());
        assert!(check_locks(
            &[Event::Closed(crate::CloseReason::Quit), Event::Unlock],
            1,
            1,
            true
        )
        .is_err());
        check_locks(&[], 1, 0, false).unwrap();
        let m = |uid: &str| super::super::StoredMessage {
            uid: uid.into(),
            body: vec![],
        };
        check_store_after(&[m("a"), m("b")], &[m("b")], &[vec!["a".into()]]).unwrap();
        assert!(check_store_after(&[m("a"), m("b")], &[m("b")], &[]).is_err());
    }

    #[test]
    fn command_lines_print_back() {
        for line in [
            &b"USER  two words"[..],
            b"PASS \xff x ",
            b"APOP a b c4c9334bac560ecc979e58001b3e22fb",
            b"top 007 00",
            b"AUTH X-NEW abc",
            b"LANG \t",
            b"junk",
        ] {
            check_command_line(line).unwrap();
        }
    }
}
