//! `Connection` through a scripted socket: every drain, flush and close path,
//! deterministic, without the OS.

use std::io::ErrorKind;

use super::*;
use crate::protocol::Echo;
use crate::testing::ScriptedStream;
use crate::timers::Clock;

const SCRATCH: usize = 8;

fn workspace(max_buffered: usize, budget: usize) -> Workspace {
    let limits = Limits {
        max_buffered,
        max_line: 64,
        read_budget_bytes: budget,
        idle_timeout_ms: None,
        stall_timeout_ms: None,
        high_water_bytes: usize::MAX,
    };
    Workspace::new(limits, SCRATCH)
}

fn fresh(sock: ScriptedStream) -> Connection<ScriptedStream, ()> {
    Connection::new(sock, (), 0, 0)
}

fn readable(sock: ScriptedStream) -> Connection<ScriptedStream, ()> {
    let mut conn = fresh(sock);
    conn.on_event(true, true, false);
    conn
}

// ---- memory ----

#[test]
fn an_idle_connection_costs_well_under_100_bytes_of_user_space() {
    // The slab stores this struct inline; an idle connection owns no heap.
    // 64 bytes in release builds: one cache line, and the slab entry is
    // no bigger. (Debug builds: 80, as mio adds a selector id to each
    // socket for its own checks.)
    let limit = if cfg!(debug_assertions) { 80 } else { 64 };
    let size = std::mem::size_of::<Connection<crate::stream::Stream, ()>>();
    assert!(size <= limit, "Connection grew to {size} bytes");
    let conn = fresh(ScriptedStream::new());
    assert_eq!(conn.inbuf.capacity() + conn.outbuf.capacity(), 0);
}

// ---- reading ----

#[test]
fn a_short_read_ends_the_drain_without_a_wouldblock_read() {
    let sock = ScriptedStream::new().gives(b"hi").accepts(100);
    let mut conn = readable(sock);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.socket.written(), b"hi");
    assert_eq!(conn.socket.calls(), 2, "one read, one write: no third call");
    assert!(!conn.state.contains(State::READ_READY));
}

#[test]
fn a_full_read_keeps_reading_until_wouldblock() {
    let sock = ScriptedStream::new()
        .gives(b"12345678")
        .accepts(100)
        .would_block();
    let mut conn = readable(sock);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.socket.calls(), 3);
    assert_eq!(ws.ctx.counters.read_calls, 2);
}

#[test]
fn after_a_hangup_event_a_short_read_does_not_stop_the_drain() {
    let sock = ScriptedStream::new().gives(b"hi").accepts(100).eof();
    let mut conn = fresh(sock);
    conn.on_event(true, true, true);
    let mut ws = workspace(1024, 1024);
    assert_eq!(
        conn.drive(&Echo, &mut ws),
        Next::Close(CloseReason::PeerClosed)
    );
    assert_eq!(conn.socket.written(), b"hi");
}

#[test]
fn a_spent_budget_asks_to_be_requeued_and_the_next_drive_goes_on() {
    let sock = ScriptedStream::new()
        .gives(b"aaaaaaaa")
        .accepts(8)
        .gives(b"bbbbbbbb")
        .accepts(8)
        .gives(b"cc")
        .accepts(8);
    let mut conn = readable(sock);
    let mut ws = workspace(1024, 16);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Requeue);
    assert!(
        conn.state.contains(State::READ_READY),
        "bytes may still wait: readiness is kept"
    );
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.socket.written(), b"aaaaaaaabbbbbbbbcc");
}

#[test]
fn a_reset_while_reading_closes_as_reset() {
    let sock = ScriptedStream::new().fails(ErrorKind::ConnectionReset);
    let mut conn = readable(sock);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Close(CloseReason::Reset));
}

// ---- partial writes ----

#[test]
fn a_partial_write_keeps_the_tail_and_the_writable_edge_sends_it_in_order() {
    let sock = ScriptedStream::new()
        .gives(b"hello")
        .accepts(3)
        .would_block();
    let mut conn = readable(sock);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.unsent(), b"lo");
    assert_eq!(ws.ctx.gauge.held_bytes, 2);
    assert!(!conn.state.contains(State::WRITE_READY));

    // More input arrives before the socket drains: it queues behind "lo".
    conn.socket = ScriptedStream::new().gives(b"!");
    conn.state.remove(State::WRITE_READY);
    conn.on_event(true, false, false);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.unsent(), b"lo!");

    conn.socket = ScriptedStream::new().accepts(100);
    conn.on_event(false, true, false);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.socket.written(), b"lo!");
    assert_eq!(
        ws.ctx.gauge.held_capacity, 0,
        "an emptied buffer is released"
    );
}

#[test]
fn a_writable_event_with_nothing_pending_makes_no_call() {
    let mut conn = fresh(ScriptedStream::new());
    conn.on_event(false, true, false);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.socket.calls(), 0);
}

#[test]
fn a_broken_pipe_while_flushing_closes_as_reset() {
    let sock = ScriptedStream::new()
        .gives(b"hey")
        .would_block()
        .fails(ErrorKind::BrokenPipe);
    let mut conn = readable(sock);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    conn.on_event(false, true, false);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Close(CloseReason::Reset));
}

// ---- backpressure ----

#[test]
fn output_past_max_buffered_pauses_reading_until_it_drains() {
    let sock = ScriptedStream::new()
        .gives(b"12345678")
        .would_block() // kernel send buffer full: 8 bytes queued
        .gives(b"abcdefgh"); // more input is waiting, unread
    let mut conn = readable(sock);
    let mut ws = workspace(8, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(ws.ctx.counters.read_pauses, 1);
    assert_eq!(ws.ctx.counters.read_calls, 1, "paused before reading more");
    assert!(
        conn.state.contains(State::READ_READY),
        "the unread bytes are remembered"
    );

    // The writable edge drains the output, and the same drive reads the
    // waiting bytes: no readable edge would come for them.
    conn.on_event(false, true, false);
    let mut rest = ScriptedStream::new()
        .accepts(100)
        .gives(b"abcdefgh")
        .accepts(100)
        .would_block();
    std::mem::swap(&mut conn.socket, &mut rest);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert_eq!(conn.socket.written(), b"12345678abcdefgh");
}

// ---- half-close ----

#[test]
fn eof_with_output_pending_closes_only_after_the_last_byte_is_sent() {
    let sock = ScriptedStream::new()
        .gives(b"bye")
        .accepts(1)
        .would_block()
        .eof();
    let mut conn = fresh(sock);
    conn.on_event(true, true, true);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    assert!(!conn.may_read());
    conn.socket = ScriptedStream::new().accepts(100);
    conn.on_event(false, true, false);
    assert_eq!(
        conn.drive(&Echo, &mut ws),
        Next::Close(CloseReason::PeerClosed)
    );
    assert_eq!(conn.socket.written(), b"ye");
}

#[test]
fn a_hangup_event_after_eof_reads_nothing_more() {
    // The peer closed while a reply was still queued. The writable event
    // that later lets it drain carries the hang-up again, which marks
    // the socket readable; the EOF was already handled, so no read.
    let sock = ScriptedStream::new().gives(b"bye").would_block().eof();
    let mut conn = fresh(sock);
    conn.on_event(true, true, true);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Echo, &mut ws), Next::Wait);
    let reads = ws.ctx.counters.read_calls;
    conn.socket = ScriptedStream::new().accepts(100);
    conn.on_event(true, true, true);
    assert_eq!(
        conn.drive(&Echo, &mut ws),
        Next::Close(CloseReason::PeerClosed)
    );
    assert_eq!(ws.ctx.counters.read_calls, reads, "EOF is read once");
    assert_eq!(conn.socket.written(), b"bye");
}

// ---- protocol-driven close and input limits ----

/// Consumes nothing until it sees `\n`; closes on "q\n", refuses "no\n".
struct Lines;
impl Protocol for Lines {
    type Session = ();
    fn on_open(&self, reply: &mut Reply<'_>) {
        reply.send(b"hi\n");
    }
    fn on_bytes(&self, _: &mut (), input: &[u8], reply: &mut Reply<'_>) -> usize {
        let mut used = 0;
        while let Some(end) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + end];
            used += end + 1;
            if line == b"q" {
                reply.close();
                break;
            }
            if line == b"no" {
                reply.refuse();
                break;
            }
            reply.send(line);
            reply.send(b";");
        }
        used
    }
    fn on_datagram(&self, _: &[u8], _: &mut Vec<u8>) {}
}

#[test]
fn a_message_split_across_reads_is_kept_until_complete() {
    let sock = ScriptedStream::new()
        .gives(b"ab")
        .gives(b"c\nd\nq\nzz") // 8 bytes: "zz" after the close is ignored
        .accepts(100)
        .eof(); // read while lingering: the peer closed too
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = workspace(1024, 1024);
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert_eq!(ws.ctx.gauge.held_bytes, 2, "the partial 'ab' waits");
    conn.on_event(true, false, false);
    assert_eq!(
        conn.drive(&Lines, &mut ws),
        Next::Close(CloseReason::ProtocolClosed)
    );
    assert_eq!(conn.socket.written(), b"abc;d;");
    assert_eq!(ws.ctx.gauge.held_bytes, 0);
}

#[test]
fn a_partial_message_longer_than_max_line_closes_the_connection() {
    let sock = ScriptedStream::new()
        .gives(&[b'x'; 8])
        .gives(&[b'x'; 8])
        .gives(&[b'x'; 8])
        .eof();
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = workspace(1024, 1024);
    ws.ctx.limits.max_line = 20;
    assert_eq!(
        conn.drive(&Lines, &mut ws),
        Next::Close(CloseReason::LineTooLong)
    );
}

#[test]
fn a_greeting_is_sent_on_open() {
    let mut conn = fresh(ScriptedStream::new().accepts(100));
    let mut ws = workspace(1024, 1024);
    let mut reply = Reply::new(&mut ws.reply);
    Lines.on_open(&mut reply);
    let requests = reply.requests();
    assert_eq!(conn.on_open_reply(requests, &mut ws), Next::Wait);
    assert_eq!(conn.socket.written(), b"hi\n");
}

// ---- closing from our side (lingering close) ----

/// A workspace for the closing tests (8-byte reads, room for output).
fn closing_workspace() -> Workspace {
    workspace(1024, 1024)
}

#[test]
fn a_close_with_input_still_arriving_shuts_down_writing_and_drains_until_eof() {
    // "q" closes; "zzzzzzzz" arrived behind it and more follows: closing
    // now, with bytes unread, would reset the connection and lose "a;".
    let sock = ScriptedStream::new()
        .gives(b"a\nq\nzzz")
        .accepts(100)
        .gives(b"zzzzzzzz")
        .would_block()
        .unacked(Some(2));
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = closing_workspace();
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert_eq!(conn.socket.written(), b"a;");
    assert!(conn.socket.write_shut(), "FIN queued after the last reply");
    assert!(conn.state.contains(State::LINGERING));
    assert_eq!(ws.ctx.counters.bytes_discarded, 8);
    assert!(
        conn.needs_reactor(),
        "the linger deadline must be scheduled"
    );
    assert_eq!(conn.next_deadline(&ws.ctx.limits), LINGER_MS);

    // More input is read and dropped; the peer's EOF ends the linger.
    conn.socket = ScriptedStream::new().gives(b"zz").eof();
    conn.on_event(true, false, true);
    assert_eq!(
        conn.drive(&Lines, &mut ws),
        Next::Close(CloseReason::ProtocolClosed)
    );
    assert_eq!(ws.ctx.counters.bytes_discarded, 10);
    assert_eq!(ws.ctx.counters.lingers, 1);
    assert_eq!(ws.ctx.counters.linger_timeouts, 0);
}

#[test]
fn a_client_caused_close_lingers_even_when_the_peer_seems_quiet() {
    // "Nothing queued right now" does not mean the client stopped sending:
    // closing at once would reset its next segment. Only shutdown skips it.
    let sock = ScriptedStream::new()
        .gives(b"a\nq\n")
        .accepts(100)
        .unacked(Some(0));
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = closing_workspace();
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert!(conn.socket.write_shut());
    assert_eq!(ws.ctx.counters.lingers, 1);
}

#[test]
fn input_is_discarded_while_owed_replies_still_drain() {
    // A client that writes everything before it reads: after our close its
    // input must still be read (and dropped), or both sides block.
    let sock = ScriptedStream::new()
        .gives(b"a\nq\nzz")
        .would_block() // our reply waits in outbuf
        .gives(b"zzzzzzzz")
        .gives(b"zz")
        .would_block();
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = closing_workspace();
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert_eq!(conn.unsent(), b"a;");
    assert_eq!(ws.ctx.counters.bytes_discarded, 10, "read on, and dropped");
    assert!(!conn.socket.write_shut(), "not before the reply is out");
}

#[test]
fn a_lingering_connection_schedules_only_its_linger_end() {
    // Discarding is not activity: with an idle timeout shorter than the
    // linger, the idle deadline would be due at once, and again, forever.
    let sock = ScriptedStream::new().gives(b"a\nq\n").accepts(100);
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = closing_workspace();
    ws.ctx.limits.idle_timeout_ms = Some(100);
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert!(conn.state.contains(State::LINGERING));
    assert_eq!(conn.next_deadline(&ws.ctx.limits), LINGER_MS);
}

#[test]
fn a_linger_that_outlasts_its_deadline_closes_and_is_counted() {
    let sock = ScriptedStream::new().gives(b"a\nq\n").accepts(100);
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = closing_workspace();
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert!(conn.state.contains(State::LINGERING));
    ws.ctx.now_ms = LINGER_MS - 1;
    assert_eq!(conn.on_deadline(&Lines, &mut ws), Next::Wait);
    ws.ctx.now_ms = LINGER_MS;
    assert_eq!(
        conn.on_deadline(&Lines, &mut ws),
        Next::Close(CloseReason::ProtocolClosed)
    );
    assert_eq!(ws.ctx.counters.linger_timeouts, 1);
}

#[test]
fn a_refusal_lingers_only_briefly() {
    // A refused client is owed no reply, only a clean FIN: its descriptor
    // is held for the short linger, not the full one.
    let sock = ScriptedStream::new().gives(b"no\n").would_block();
    let mut conn: Connection<_, ()> = readable(sock);
    let mut ws = closing_workspace();
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert!(conn.socket.write_shut(), "FIN sent, lingering");
    assert_eq!(conn.next_deadline(&ws.ctx.limits), REFUSAL_LINGER_MS);
    ws.ctx.now_ms = REFUSAL_LINGER_MS;
    assert_eq!(
        conn.on_deadline(&Lines, &mut ws),
        Next::Close(CloseReason::Refused)
    );
    assert_eq!(ws.ctx.counters.linger_timeouts, 1);
}

#[test]
fn shutdown_lingers_only_where_replies_are_still_unacknowledged() {
    let mut ws = closing_workspace();
    ws.ctx.now_ms = QUIET_BEFORE_SHUTDOWN_MS; // silent since it opened at 0
    let mut quiet = fresh(ScriptedStream::new().unacked(Some(0)));
    assert_eq!(
        quiet.stop_reading(&mut ws),
        Next::Close(CloseReason::Shutdown)
    );
    let mut busy = fresh(ScriptedStream::new().unacked(Some(100)));
    assert_eq!(busy.stop_reading(&mut ws), Next::Wait);
    assert!(busy.socket.write_shut());
}

#[test]
fn shutdown_lingers_on_a_client_that_spoke_within_the_quiet_time() {
    // Everything acknowledged and nothing seen queued, but it spoke just
    // now: its next message may already be on the wire, and closing over it
    // would send a reset instead of FIN (tests/bench_server_close.rs).
    let mut ws = closing_workspace();
    ws.ctx.now_ms = QUIET_BEFORE_SHUTDOWN_MS - 1;
    let mut talking = fresh(ScriptedStream::new().unacked(Some(0)));
    assert_eq!(talking.stop_reading(&mut ws), Next::Wait);
    assert!(talking.socket.write_shut(), "FIN sent, lingering");
}

// ---- protocols that break the contract ----

/// Claims to consume more than it was given.
struct Overreach;
impl Protocol for Overreach {
    type Session = ();
    fn on_open(&self, _: &mut Reply<'_>) {}
    fn on_bytes(&self, _: &mut (), input: &[u8], _: &mut Reply<'_>) -> usize {
        input.len() + 1
    }
    fn on_datagram(&self, _: &[u8], _: &mut Vec<u8>) {}
}

#[test]
fn a_protocol_that_consumes_more_than_it_was_given_closes_only_its_connection() {
    let mut conn: Connection<_, ()> = readable(ScriptedStream::new().gives(b"hi"));
    let mut ws = closing_workspace();
    assert_eq!(
        conn.drive(&Overreach, &mut ws),
        Next::Close(CloseReason::Error)
    );
}

/// Re-arms a zero deadline every time it fires.
struct Impatient;
impl Protocol for Impatient {
    type Session = ();
    fn on_open(&self, reply: &mut Reply<'_>) {
        reply.set_deadline(std::time::Duration::ZERO);
    }
    fn on_bytes(&self, _: &mut (), input: &[u8], _: &mut Reply<'_>) -> usize {
        input.len()
    }
    fn on_deadline(&self, _: &mut (), reply: &mut Reply<'_>) {
        reply.set_deadline(std::time::Duration::ZERO);
    }
    fn on_datagram(&self, _: &[u8], _: &mut Vec<u8>) {}
}

#[test]
fn a_zero_deadline_comes_due_no_sooner_than_the_next_millisecond() {
    let mut conn = fresh(ScriptedStream::new());
    let mut ws = closing_workspace();
    ws.ctx.now_ms = 10;
    let mut reply = Reply::new(&mut ws.reply);
    Impatient.on_open(&mut reply);
    let requests = reply.requests();
    assert_eq!(conn.on_open_reply(requests, &mut ws), Next::Wait);
    assert_eq!(conn.next_deadline(&ws.ctx.limits), 11);
    ws.ctx.now_ms = 11;
    assert_eq!(conn.on_deadline(&Impatient, &mut ws), Next::Wait);
    // Re-armed from on_deadline: due after `now`, so the reactor's pass
    // over due entries cannot pop it again in the same turn.
    assert_eq!(conn.next_deadline(&ws.ctx.limits), 12);
}

#[test]
fn a_deadline_set_late_in_a_long_turn_counts_from_when_it_was_set_not_from_the_turn() {
    // The turn began at 0 ms (its cached reading) but has run for 50 ms
    // when the protocol arms a 200 ms deadline: due no sooner than 250 ms.
    let mut conn = fresh(ScriptedStream::new());
    let mut ws = closing_workspace();
    ws.ctx.clock = Clock::already_run(std::time::Duration::from_millis(50));
    ws.ctx.now_ms = 0;
    let mut reply = Reply::new(&mut ws.reply);
    reply.set_deadline(std::time::Duration::from_millis(200));
    let requests = reply.requests();
    assert_eq!(conn.on_open_reply(requests, &mut ws), Next::Wait);
    let due = conn.next_deadline(&ws.ctx.limits);
    assert!(
        due >= 250,
        "due at {due} ms: 200 ms from the turn's start, not from now"
    );
}

#[test]
fn shutdown_closes_at_once_a_connection_we_never_sent_to_even_one_just_opened() {
    let mut ws = closing_workspace();
    ws.ctx.now_ms = 10; // opened at 0: within the quiet time
    let never_sent = ScriptedStream::new()
        .unacked(Some(0))
        .last_sent_ago(Some(u64::MAX));
    let mut conn = fresh(never_sent);
    assert_eq!(
        conn.stop_reading(&mut ws),
        Next::Close(CloseReason::Shutdown)
    );
    assert!(!conn.socket.write_shut(), "closed, not lingering");
}

#[test]
fn shutdown_lingers_only_on_a_connection_we_sent_to_within_the_quiet_time() {
    let mut ws = closing_workspace();
    ws.ctx.now_ms = 10;
    let stream = |ago| {
        ScriptedStream::new()
            .unacked(Some(0))
            .last_sent_ago(Some(ago))
    };
    let mut answered = fresh(stream(QUIET_BEFORE_SHUTDOWN_MS - 1));
    assert_eq!(answered.stop_reading(&mut ws), Next::Wait);
    assert!(answered.socket.write_shut(), "FIN sent, lingering");
    // Spoke to us just now (the last activity is recent), but we last
    // sent long ago: we owe it nothing.
    let mut quiet = fresh(stream(QUIET_BEFORE_SHUTDOWN_MS));
    assert_eq!(
        quiet.stop_reading(&mut ws),
        Next::Close(CloseReason::Shutdown)
    );
}

#[test]
fn shutdown_lingers_on_a_client_in_the_middle_of_a_message() {
    // Half a line in our buffer, nothing sent to it for long: not idle.
    // Closing at once would reset the connection on its next segment.
    let mut ws = closing_workspace();
    let sock = ScriptedStream::new()
        .gives(b"hal")
        .would_block()
        .unacked(Some(0))
        .last_sent_ago(Some(u64::MAX));
    let mut conn: Connection<_, ()> = readable(sock);
    assert_eq!(conn.drive(&Lines, &mut ws), Next::Wait);
    assert_eq!(conn.inbuf.len(), 3, "a partial line, waiting for its end");
    ws.ctx.now_ms = QUIET_BEFORE_SHUTDOWN_MS;
    assert_eq!(conn.stop_reading(&mut ws), Next::Wait);
    assert!(conn.socket.write_shut(), "FIN sent, lingering");
}

#[test]
fn shutdown_lingers_on_bytes_that_arrived_after_the_last_poll() {
    // No event announced them yet (READ_READY is clear), but they sit in
    // the receive queue: a close() now would find them unread and reset.
    let mut ws = closing_workspace();
    ws.ctx.now_ms = QUIET_BEFORE_SHUTDOWN_MS;
    let sock = ScriptedStream::new()
        .gives(b"late\n")
        .unacked(Some(0))
        .last_sent_ago(Some(u64::MAX));
    let mut conn = fresh(sock);
    assert_eq!(conn.stop_reading(&mut ws), Next::Wait);
    assert!(conn.socket.write_shut(), "FIN sent, lingering");
}
