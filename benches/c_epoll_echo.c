/*
 * c_epoll_echo.c -- the floor `cargo bench` measures echo-reactor against:
 * a minimal, correct, single-threaded edge-triggered epoll echo server in C.
 *
 *   cc -O2 -o c_epoll_echo benches/c_epoll_echo.c
 *   ./c_epoll_echo PORT        (listens on 127.0.0.1:PORT)
 *
 * The same rules as the Rust reactor, with nothing else around them:
 * - Edge-triggered (EPOLLET): an event reports a *change*, so every read
 *   loop runs until EAGAIN, or the next bytes would never be announced.
 * - A write the kernel takes only in part keeps the rest, in order, and
 *   waits for the writable edge (registered once, with the readable one).
 * - Backpressure: past HIGH_WATER unsent bytes a connection is not read;
 *   the writable edge that drains it resumes the reads (no new readable
 *   edge would come for bytes already queued).
 * - EOF with replies still owed: they are sent first, then the socket closes.
 * - send(MSG_NOSIGNAL): a peer gone mid-write is an error, not SIGPIPE.
 * It prints `listening on tcp 127.0.0.1:PORT` once it accepts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define HIGH_WATER (1024 * 1024) /* unsent bytes before reading pauses */
#define MAX_EVENTS 1024

struct conn {
    int fd;
    char *out;        /* unsent bytes: out[off..len] */
    size_t off, len, cap;
    int peer_done;    /* EOF read: close once everything is sent */
};

static char buf[READ_CHUNK];

static void conn_close(struct conn *c) {
    close(c->fd); /* also removes it from the epoll set */
    free(c->out);
    free(c);
}

/* Keep `data[0..n]` behind whatever is already unsent. 0 on success. */
static int queue(struct conn *c, const char *data, size_t n) {
    if (c->off > 0 && c->off == c->len) c->off = c->len = 0;
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : READ_CHUNK;
        while (cap < c->len + n) cap *= 2;
        char *grown = realloc(c->out, cap);
        if (!grown) return -1;
        c->out = grown;
        c->cap = cap;
    }
    memcpy(c->out + c->len, data, n);
    c->len += n;
    return 0;
}

/* Send unsent bytes until done or EAGAIN. 1: all sent, 0: blocked, -1: error. */
static int flush(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->out + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0; /* the writable edge calls us again */
        } else {
            return -1;
        }
    }
    c->off = c->len = 0;
    return 1;
}

/* Make all the progress the kernel allows now, on either edge. */
static void on_ready(struct conn *c) {
    for (;;) {
        int flushed = flush(c);
        if (flushed < 0) { conn_close(c); return; }
        if (c->peer_done) {
            if (flushed) conn_close(c); /* owed replies sent: done */
            return;
        }
        if (c->len - c->off >= HIGH_WATER) return; /* paused until writable */
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            /* Nothing queued: send straight from the shared buffer, and
             * copy only what the kernel would not take. */
            size_t sent = 0;
            if (c->off == c->len) {
                ssize_t w = send(c->fd, buf, (size_t)n, MSG_NOSIGNAL);
                if (w > 0) {
                    sent = (size_t)w;
                } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    conn_close(c);
                    return;
                }
            }
            if (sent < (size_t)n && queue(c, buf + sent, (size_t)n - sent) < 0) {
                conn_close(c);
                return;
            }
        } else if (n == 0) {
            c->peer_done = 1; /* loop once more: flush, then close */
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (flush(c) < 0) conn_close(c);
            return; /* drained: the next readable edge calls us */
        } else {
            conn_close(c); /* ECONNRESET and the like */
            return;
        }
    }
}

/* Accept until EAGAIN (the listener is edge-triggered too). */
static void on_accept(int epfd, int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("accept4"); /* EMFILE: connections wait in the backlog */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) { conn_close(c); continue; }
    }
}

int main(int argc, char **argv) {
    char *end = NULL;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (argc != 2 || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT (listens on 127.0.0.1:PORT)\n", argv[0]);
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 1024) < 0) {
        perror("bind 127.0.0.1");
        return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev) < 0) {
        perror("epoll");
        return 1;
    }
    printf("listening on tcp 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL) on_accept(epfd, listener);
            else on_ready(events[i].data.ptr);
        }
    }
}
