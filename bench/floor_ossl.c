/* floor-ossl: a bare DoT replay server in C on OpenSSL (issue 6, option (c)).
 *
 * What a C-level TLS path over the system OpenSSL would cost at best: every framed
 * query is answered with one precomputed answer (n0.bench.test A 192.0.2.1, 47 bytes, its
 * ID patched), exactly as bench/transport_floor.py's Python floors do, so only the
 * transport costs. It keeps dnstls's wire rules and its architecture minus Python:
 *
 *   - one epoll loop, non-blocking sockets, TCP_NODELAY;
 *   - memory BIOs both ways, as uvloop's SSL protocol: one recv() per readable event
 *     fed to the read BIO, SSL_read until WANT_READ, then every answer of that read as
 *     its own TLS record (SSL_write each) into the write BIO, flushed with one send();
 *   - the TLS settings of dnstls.net.tls.server_context: TLS >= 1.2, the same TLS 1.2
 *     cipher string and TLS 1.3 suite order, server preference, no compression, no
 *     renegotiation, ALPN "dot" if offered, one TLS 1.3 ticket; session tickets as the
 *     Python floors (server_context's default), or with --stateful dnstls serve's
 *     stateful session cache (10,000 sessions, no tickets).
 *
 * Build and run (bench/transport_floor.py does both for the server name "floor-ossl"):
 *   cc -O2 -o floor_ossl bench/floor_ossl.c -lssl -lcrypto
 *   ./floor_ossl PORT CERT KEY [--stateful]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
#define MAX_EVENTS 256

static const char TLS12_CIPHERS[] = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!SHA1:!SHA256:!SHA384";
static const char TLS13_SUITES[] =
    "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384";
static const unsigned char ALPN_DOT[] = {3, 'd', 'o', 't'};

/* 2-byte length, then n0.bench.test A 192.0.2.1 TTL 86400 (47 bytes) */
static const unsigned char FRAMED[] = {
    0, 47,
    0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
    2, 'n', '0', 5, 'b', 'e', 'n', 'c', 'h', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
    0xc0, 0x0c, 0, 1, 0, 1, 0, 1, 0x51, 0x80, 0, 4, 192, 0, 2, 1};

struct conn {
    int fd;
    int established;
    SSL *ssl;
    BIO *rbio, *wbio;          /* owned by ssl */
    unsigned char *in;         /* decrypted bytes not yet framed */
    size_t in_len, in_cap;
    unsigned char *out;        /* encrypted bytes a send() did not take */
    size_t out_len;
};

static int epfd;
static unsigned char readbuf[READ_SIZE];
static unsigned char plainbuf[READ_SIZE];

static void conn_close(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    SSL_free(c->ssl);
    free(c->in);
    free(c->out);
    free(c);
}

/* Send what the write BIO holds (after anything left over). 0 ok, -1 closed. */
static int flush(struct conn *c) {
    char *data;
    long n = BIO_get_mem_data(c->wbio, &data);
    if (n > 0) {
        c->out = realloc(c->out, c->out_len + (size_t)n);
        memcpy(c->out + c->out_len, data, (size_t)n);
        c->out_len += (size_t)n;
        (void)BIO_reset(c->wbio);
    }
    while (c->out_len > 0) {
        ssize_t sent = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                return 0;
            }
            return -1;
        }
        memmove(c->out, c->out + sent, c->out_len - (size_t)sent);
        c->out_len -= (size_t)sent;
    }
    return 0;
}

/* Answer every complete frame in c->in, one SSL_write (one record) per answer. */
static int answer(struct conn *c) {
    size_t pos = 0;
    unsigned char reply[sizeof FRAMED];
    _Static_assert(sizeof FRAMED == 2 + 47, "FRAMED's length prefix");
    memcpy(reply, FRAMED, sizeof FRAMED);
    while (c->in_len - pos >= 2) {
        size_t len = ((size_t)c->in[pos] << 8) | c->in[pos + 1];
        if (c->in_len - pos - 2 < len) break;
        if (len >= 2) {
            reply[2] = c->in[pos + 2];
            reply[3] = c->in[pos + 3];
            if (SSL_write(c->ssl, reply, sizeof reply) <= 0) return -1;
        }
        pos += 2 + len;
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return 0;
}

/* Decrypt what the read BIO holds; 0 ok, -1 close. */
static int pump(struct conn *c) {
    if (!c->established) {
        int r = SSL_accept(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ) return flush(c);
            ERR_clear_error();
            flush(c);
            return -1;
        }
        c->established = 1;
    }
    for (;;) {
        int n = SSL_read(c->ssl, plainbuf, sizeof plainbuf);
        if (n > 0) {
            if (c->in_len + (size_t)n > c->in_cap) {
                c->in_cap = c->in_len + (size_t)n + 4096;
                c->in = realloc(c->in, c->in_cap);
            }
            memcpy(c->in + c->in_len, plainbuf, (size_t)n);
            c->in_len += (size_t)n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ) break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            if (answer(c) < 0) return -1;
            SSL_shutdown(c->ssl);
            flush(c);
            return -1;
        }
        ERR_clear_error();
        return -1;
    }
    if (answer(c) < 0) return -1;
    return flush(c);
}

static void on_readable(struct conn *c) {
    ssize_t n = recv(c->fd, readbuf, sizeof readbuf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    BIO_write(c->rbio, readbuf, (int)n);
    if (pump(c) < 0) conn_close(c);
}

static void on_writable(struct conn *c) {
    if (flush(c) < 0) {
        conn_close(c);
        return;
    }
    if (c->out_len == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl;
    (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ALPN_DOT, sizeof ALPN_DOT, in, inlen)
        != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_ctx(const char *cert, const char *key, int stateful) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE
                                 | SSL_OP_NO_RENEGOTIATION | SSL_OP_SINGLE_ECDH_USE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY);
    if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)
        || !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES))
        return NULL;
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    SSL_CTX_set_num_tickets(ctx, 1);
    /* as CPython's ssl module: stateful resumption needs a session ID context */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"Python", 6);
    if (stateful) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_sess_set_cache_size(ctx, 10000);
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
        || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return NULL;
    return ctx;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PORT CERT KEY [--stateful]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int stateful = argc > 4 && strcmp(argv[4], "--stateful") == 0;
    SSL_CTX *ctx = make_ctx(argv[2], argv[3], stateful);
    if (!ctx) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("bind/listen");
        return 1;
    }
    epfd = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                for (int k = 0; k < 64; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->ssl = SSL_new(ctx);
                    c->rbio = BIO_new(BIO_s_mem());
                    c->wbio = BIO_new(BIO_s_mem());
                    SSL_set_bio(c->ssl, c->rbio, c->wbio);
                    SSL_set_accept_state(c->ssl);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                on_writable(c);
                continue; /* a closed conn must not be touched again */
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
}
