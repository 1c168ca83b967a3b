/* SHA-256 of many messages in one call: Merkle leaves, levels and roots (the hashing of protocol/merkle.py without a
 * Python call per node: a million-leaf tree is two million SHA-256 of 65 bytes), the rows of Arrow columns where their
 * buffers hold them (a column of leaf texts, records whose fields lie in several buffers) without a Python object per
 * row, and the digests of a list of strings (a million task ids an epoch, drawn or named by hash).
 * OpenSSL's SHA-256 picks the CPU's SHA extensions. merkle.py defines the tree (RFC 6962 prefixes, a lone last node
 * carried up unchanged); tests check each function against hashlib.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: the low-level calls, no per-hash algorithm fetch */
#include <Python.h>
#include <openssl/sha.h>
#include <string.h>

#define DIGEST 32
static const unsigned char NODE_PREFIX = 0x01;

/* SHA-256(prefix || text) into out: every hash of this module. */
static void prefixed_sha256(const void *prefix, size_t prefix_size, const void *text, size_t size, unsigned char *out) {
    SHA256_CTX context;
    SHA256_Init(&context);
    SHA256_Update(&context, prefix, prefix_size);
    SHA256_Update(&context, text, size);
    SHA256_Final(out, &context);
}

/* Hash neighbours of `level` (count digests) pairwise into `out`; a lone last digest is copied up. Returns the count. */
static Py_ssize_t next_level(const unsigned char *level, Py_ssize_t count, unsigned char *out) {
    Py_ssize_t pairs = count / 2;
    for (Py_ssize_t i = 0; i < pairs; i++)
        prefixed_sha256(&NODE_PREFIX, 1, level + 2 * i * DIGEST, 2 * DIGEST, out + i * DIGEST);
    if (count % 2)
        memmove(out + pairs * DIGEST, level + (count - 1) * DIGEST, DIGEST);
    return pairs + count % 2;
}

/* The digests of `leaves` (a list or tuple of 32-byte bytes, or one bytes-like object of 32-byte digests end to end)
 * copied into a new buffer; sets *count. NULL with an exception set on anything else. */
static unsigned char *gather(PyObject *leaves, Py_ssize_t *count) {
    unsigned char *buffer;
    if (PyList_Check(leaves) || PyTuple_Check(leaves)) { /* read in place: the GIL is held throughout */
        Py_ssize_t n = PySequence_Fast_GET_SIZE(leaves);
        PyObject **items = PySequence_Fast_ITEMS(leaves);
        buffer = PyMem_RawMalloc(n ? n * DIGEST : 1);
        if (buffer == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!PyBytes_Check(items[i]) || PyBytes_GET_SIZE(items[i]) != DIGEST) {
                PyErr_Format(PyExc_ValueError, "leaf %zd is not a 32-byte digest (bytes)", i);
                PyMem_RawFree(buffer);
                return NULL;
            }
            memcpy(buffer + i * DIGEST, PyBytes_AS_STRING(items[i]), DIGEST);
        }
        *count = n;
        return buffer;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(leaves, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    if (view.len % DIGEST) {
        PyErr_Format(PyExc_ValueError, "a buffer of digests holds a multiple of 32 bytes, not %zd", view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    buffer = PyMem_RawMalloc(view.len ? view.len : 1);
    if (buffer == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(buffer, view.buf, view.len);
    *count = view.len / DIGEST;
    PyBuffer_Release(&view);
    return buffer;
}

/* The level above `leaves` (levels = 1), or the root (levels = -1: hash up until one digest is left), as bytes. The
 * levels are hashed in place: pair i is read before slot i is written. */
static PyObject *hash_up(PyObject *leaves, int levels) {
    Py_ssize_t count;
    unsigned char *level = gather(leaves, &count);
    if (level == NULL)
        return NULL;
    if (count == 0 && levels < 0) {
        PyMem_RawFree(level);
        PyErr_SetString(PyExc_ValueError, "no leaves: the empty tree's root is merkle.EMPTY_ROOT");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int done = 0; count > 1 && done != levels; done++)
        count = next_level(level, count, level);
    Py_END_ALLOW_THREADS
    PyObject *result = PyBytes_FromStringAndSize((const char *)level, count * DIGEST);
    PyMem_RawFree(level);
    return result;
}

static PyObject *merkle_next_level(PyObject *Py_UNUSED(module), PyObject *leaves) { return hash_up(leaves, 1); }

static PyObject *merkle_root(PyObject *Py_UNUSED(module), PyObject *leaves) { return hash_up(leaves, -1); }

/* SHA-256(prefix || item) of each item of a list or tuple of str (as UTF-8) or bytes, digests end to end. */
static PyObject *sha256_digests(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer prefix;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "y*O:digests", &prefix, &items))
        return NULL;
    PyObject *result = NULL;
    if (!PyList_Check(items) && !PyTuple_Check(items)) {
        PyErr_Format(PyExc_TypeError, "digests: items must be a list or tuple, not %s", Py_TYPE(items)->tp_name);
        goto done;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items); /* read in place: the GIL is held throughout */
    PyObject **each = PySequence_Fast_ITEMS(items);
    result = PyBytes_FromStringAndSize(NULL, count * DIGEST);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < count; i++) {
        const char *text;
        Py_ssize_t size;
        if (PyUnicode_Check(each[i]))
            text = PyUnicode_AsUTF8AndSize(each[i], &size);
        else if (PyBytes_Check(each[i]))
            text = PyBytes_AS_STRING(each[i]), size = PyBytes_GET_SIZE(each[i]);
        else {
            PyErr_Format(PyExc_TypeError, "digests: item %zd is %s, not str or bytes", i, Py_TYPE(each[i])->tp_name);
            text = NULL;
        }
        if (text == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        prefixed_sha256(prefix.buf, prefix.len, text, size, out + i * DIGEST);
    }
done:
    PyBuffer_Release(&prefix);
    return result;
}

/* Release the first `count` buffers of `buffers` and free the array. */
static void release_all(Py_buffer *buffers, Py_ssize_t count) {
    for (Py_ssize_t j = 0; j < count; j++)
        PyBuffer_Release(&buffers[j]);
    PyMem_Free(buffers);
}

/* SHA-256(prefix || head row i || each part's span i) of `count` rows: the head holds count rows of equal width end to
 * end; each part is (offsets, data), count + 1 int64 positions into data (not from zero). A record's columns are
 * hashed where Arrow holds them, without joining each row's bytes first. The digests end to end. */
static PyObject *row_pieces(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer prefix, head;
    Py_ssize_t count;
    PyObject *parts;
    if (!PyArg_ParseTuple(args, "y*ny*O:pieces", &prefix, &count, &head, &parts))
        return NULL;
    PyObject *result = NULL;
    Py_buffer *buffers = NULL;
    Py_ssize_t acquired = 0, bad = -1, bad_part = -1, width = 0, nparts = 0;
    if (!PyList_Check(parts) && !PyTuple_Check(parts)) {
        PyErr_Format(PyExc_TypeError, "pieces: parts must be a list or tuple, not %s", Py_TYPE(parts)->tp_name);
        goto done;
    }
    if (count < 0 || (count == 0 ? head.len != 0 : head.len % count != 0)) {
        PyErr_Format(PyExc_ValueError, "pieces: a head of %zd bytes is not %zd rows of equal width", head.len, count);
        goto done;
    }
    width = count ? head.len / count : 0;
    nparts = PySequence_Fast_GET_SIZE(parts); /* read in place: the GIL is held while the buffers are taken */
    buffers = PyMem_Calloc(2 * nparts + 1, sizeof(Py_buffer));
    if (buffers == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < nparts; j++) {
        PyObject *part = PySequence_Fast_ITEMS(parts)[j];
        if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != 2) {
            PyErr_Format(PyExc_TypeError, "pieces: part %zd is not an (offsets, data) tuple", j);
            goto done;
        }
        for (int k = 0; k < 2; k++) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(part, k), &buffers[2 * j + k], PyBUF_SIMPLE) != 0)
                goto done;
            acquired++;
        }
        if (buffers[2 * j].len != (count + 1) * (Py_ssize_t)sizeof(int64_t)) {
            PyErr_Format(PyExc_ValueError, "pieces: part %zd's offsets are not %zd int64", j, count + 1);
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, count * DIGEST);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *rows = head.buf;
    int64_t start = 0, end = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count && bad < 0; i++) {
        SHA256_CTX context;
        SHA256_Init(&context);
        SHA256_Update(&context, prefix.buf, prefix.len);
        SHA256_Update(&context, rows + i * width, width);
        for (Py_ssize_t j = 0; j < nparts; j++) {
            const int64_t *ends = buffers[2 * j].buf;
            start = ends[i], end = ends[i + 1]; /* read once and checked as used: the buffers may change under us */
            if (start < 0 || start > end || end > buffers[2 * j + 1].len) {
                bad = i, bad_part = j;
                break;
            }
            SHA256_Update(&context, (const unsigned char *)buffers[2 * j + 1].buf + start, end - start);
        }
        SHA256_Final(out + i * DIGEST, &context);
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "pieces: row %zd's span [%lld, %lld) of part %zd lies outside its data", bad,
                     (long long)start, (long long)end, bad_part);
        Py_CLEAR(result);
    }
done:
    if (buffers != NULL)
        release_all(buffers, acquired);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&head);
    return result;
}

static PyMethodDef methods[] = {
    {"digests", sha256_digests, METH_VARARGS,
     "digests(prefix, items) -> bytes: SHA-256(prefix || item) of each str (UTF-8) or bytes item, digests end to end."},
    {"next_level", merkle_next_level, METH_O,
     "next_level(leaves) -> bytes: the level above, digests end to end (neighbours hashed with the node prefix, a lone "
     "last digest carried up). leaves: a list of 32-byte digests or one buffer of them."},
    {"pieces", row_pieces, METH_VARARGS,
     "pieces(prefix, count, head, parts) -> bytes: SHA-256(prefix || head row i || each part's span i) of count rows, "
     "digests end to end; head: count rows of equal width; parts: (offsets, data) tuples, count + 1 int64 positions."},
    {"root", merkle_root, METH_O, "root(leaves) -> bytes: the 32-byte root over one or more leaves (as next_level)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sha256", "SHA-256 of many messages in one call: Merkle leaves, levels and roots, digests of a list.", -1, methods};

PyMODINIT_FUNC PyInit__sha256(void) { return PyModule_Create(&module); }
