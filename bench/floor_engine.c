/* _floor_engine: the TLS record plumbing of one DoT connection in C, driven from Python
 * (issue 6, option (c): what a C-level TLS path under dnstls's Python would cost).
 *
 * bench/transport_floor.py's "floor-x" uses it: uvloop's add_reader calls a Python
 * method per readable event, which calls Engine.read() (one recv(), the bytes into the
 * read memory BIO, SSL_accept while handshaking, then SSL_read until WANT_READ: all the
 * plaintext of that read as one bytes object, no exception per read), frames and answers
 * in Python, Engine.write() per answer (one SSL_write, one record, into the write memory
 * BIO) and Engine.flush() once (one send()). The SSL_CTX is the one of a Python
 * ssl.SSLContext (dnstls.net.tls.server_context), passed as its address.
 *
 * Engine(ctx_address, fd)
 *   read()  -> bytes (possibly empty: nothing yet) or None (closed, failed or
 *              close_notify received: the caller closes the socket)
 *   write(data)      one TLS record
 *   flush() -> int   bytes still unsent (the caller waits for writability)
 *   close()          close_notify into the write BIO, flushed best effort
 *   ready()          the handshake has completed
 *   version(), session_reused, keep_session(), error()
 *                    for the dnstls prototype transport (bench/proposals): the TLS
 *                    version, resumption, SSL_set_shutdown(SENT) so a session survives a
 *                    peer's close without close_notify, the reason of a failed handshake
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#define READ_SIZE 65536

static unsigned char readbuf[READ_SIZE];
static unsigned char plainbuf[READ_SIZE];

typedef struct {
    PyObject_HEAD
    int fd;
    int established;
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    char *out;        /* encrypted bytes send() did not take */
    size_t out_len;
    char error[120];  /* why the handshake failed */
} Engine;

static int Engine_init(Engine *self, PyObject *args, PyObject *kwds) {
    unsigned long long ctx_addr;
    int fd;
    (void)kwds;
    if (!PyArg_ParseTuple(args, "Ki", &ctx_addr, &fd)) return -1;
    self->fd = fd;
    self->ssl = SSL_new((SSL_CTX *)(uintptr_t)ctx_addr);
    if (!self->ssl) {
        PyErr_SetString(PyExc_MemoryError, "SSL_new");
        return -1;
    }
    self->rbio = BIO_new(BIO_s_mem());
    self->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(self->ssl, self->rbio, self->wbio);
    SSL_set_accept_state(self->ssl);
    return 0;
}

static void Engine_dealloc(Engine *self) {
    if (self->ssl) SSL_free(self->ssl);
    free(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Move the write BIO's bytes behind what is pending and send(); -1 on a send error. */
static int do_flush(Engine *self) {
    char *data;
    long n = BIO_get_mem_data(self->wbio, &data);
    if (n > 0) {
        char *grown = realloc(self->out, self->out_len + (size_t)n);
        if (!grown) return -1;
        self->out = grown;
        memcpy(self->out + self->out_len, data, (size_t)n);
        self->out_len += (size_t)n;
        (void)BIO_reset(self->wbio);
    }
    while (self->out_len > 0) {
        ssize_t sent = send(self->fd, self->out, self->out_len, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            return -1;
        }
        memmove(self->out, self->out + sent, self->out_len - (size_t)sent);
        self->out_len -= (size_t)sent;
    }
    return 0;
}

static PyObject *Engine_read(Engine *self, PyObject *unused) {
    (void)unused;
    if (!self->ssl) Py_RETURN_NONE;
    ssize_t n = recv(self->fd, readbuf, sizeof readbuf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return PyBytes_FromStringAndSize(NULL, 0);
    if (n <= 0) Py_RETURN_NONE;
    BIO_write(self->rbio, readbuf, (int)n);
    if (!self->established) {
        int r = SSL_accept(self->ssl);
        if (r != 1) {
            int err = SSL_get_error(self->ssl, r);
            if (err != SSL_ERROR_WANT_READ) {
                unsigned long code = ERR_peek_last_error();
                const char *reason = code ? ERR_reason_error_string(code) : NULL;
                snprintf(self->error, sizeof self->error, "%s",
                         reason ? reason : (err == SSL_ERROR_SYSCALL ? "EOF" : "SSL error"));
            }
            ERR_clear_error();
            if (err == SSL_ERROR_WANT_READ && do_flush(self) == 0)
                return PyBytes_FromStringAndSize(NULL, 0);
            do_flush(self);
            Py_RETURN_NONE;
        }
        self->established = 1;
        /* the server's last flight (TLS 1.2 Finished, TLS 1.3 tickets) before any data */
        if (do_flush(self) < 0) Py_RETURN_NONE;
    }
    size_t got = 0;
    for (;;) {
        int r = SSL_read(self->ssl, plainbuf + got, (int)(sizeof plainbuf - got));
        if (r > 0) {
            got += (size_t)r;
            if (got == sizeof plainbuf) break; /* the rest on the next call */
            continue;
        }
        int err = SSL_get_error(self->ssl, r);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ) break;
        if (got > 0) break; /* deliver what came before the close or error */
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize((const char *)plainbuf, (Py_ssize_t)got);
}

static PyObject *Engine_write(Engine *self, PyObject *arg) {
    char *data;
    Py_ssize_t len;
    if (!self->ssl) Py_RETURN_NONE;
    if (PyBytes_AsStringAndSize(arg, &data, &len) < 0) return NULL;
    if (len > 0 && SSL_write(self->ssl, data, (int)len) <= 0) {
        ERR_clear_error();
        PyErr_SetString(PyExc_OSError, "SSL_write failed");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_flush(Engine *self, PyObject *unused) {
    (void)unused;
    if (!self->ssl) return PyLong_FromLong(0);
    if (do_flush(self) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromSize_t(self->out_len);
}

static PyObject *Engine_close(Engine *self, PyObject *unused) {
    (void)unused;
    if (self->ssl) {
        if (self->established) SSL_shutdown(self->ssl);
        ERR_clear_error();
        do_flush(self);
        SSL_free(self->ssl);
        self->ssl = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_ready(Engine *self, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(self->established);
}

static PyObject *Engine_version(Engine *self, PyObject *unused) {
    (void)unused;
    if (!self->ssl || !self->established) Py_RETURN_NONE;
    return PyUnicode_FromString(SSL_get_version(self->ssl));
}

static PyObject *Engine_keep_session(Engine *self, PyObject *unused) {
    (void)unused;
    if (self->ssl) SSL_set_shutdown(self->ssl, SSL_SENT_SHUTDOWN);
    Py_RETURN_NONE;
}

static PyObject *Engine_error(Engine *self, PyObject *unused) {
    (void)unused;
    return PyUnicode_FromString(self->error);
}

static PyObject *Engine_get_session_reused(Engine *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->ssl ? SSL_session_reused(self->ssl) : 0);
}

static PyGetSetDef Engine_getset[] = {
    {"session_reused", (getter)Engine_get_session_reused, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Engine_methods[] = {
    {"ready", (PyCFunction)Engine_ready, METH_NOARGS, NULL},
    {"version", (PyCFunction)Engine_version, METH_NOARGS, NULL},
    {"keep_session", (PyCFunction)Engine_keep_session, METH_NOARGS, NULL},
    {"error", (PyCFunction)Engine_error, METH_NOARGS, NULL},
    {"read", (PyCFunction)Engine_read, METH_NOARGS, NULL},
    {"write", (PyCFunction)Engine_write, METH_O, NULL},
    {"flush", (PyCFunction)Engine_flush, METH_NOARGS, NULL},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_floor_engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_floor_engine", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__floor_engine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
