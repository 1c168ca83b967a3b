/* The integer half of the sprint's nonce streams (compute/sprint.py) on CPU, one pass each without temporaries: the
 * nonces' stream keys, the splitmix64 words behind each nonce's Box-Muller uniforms, and the logits permuted by each
 * nonce's affine map. sprint.py's torch ops define all three; these produce the same bits (integer arithmetic is exact,
 * a gather copies, and each float step is one IEEE operation, as torch does it: built with -ffp-contract=off so no
 * multiply-add is fused). tests/compute compares them with the torch ops. In torch a batch of poc-tiny inputs is about
 * twenty passes over 512 KiB, and its index maps 1 MiB of int64 written and read back.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define GAMMA 0x9E3779B97F4A7C15ULL
#define UNIFORM_BITS 24
#define LANES 8

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A writable C-contiguous buffer of exactly `count` items of `itemsize` bytes, or -1 with an exception set. */
static int writable(PyObject *object, Py_buffer *view, Py_ssize_t count, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(object, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0)
        return -1;
    if (view->len != count * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd", name, view->len, count * itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* keys(root, nonces, out): out[b] = mix64(root + nonces[b] * gamma), int64 words (wrapping): each nonce's stream key. */
static PyObject *stream_keys(PyObject *self, PyObject *args) {
    Py_buffer nonces, out;
    PyObject *out_object;
    long long root;
    if (!PyArg_ParseTuple(args, "Ly*O:keys", &root, &nonces, &out_object))
        return NULL;
    Py_ssize_t rows = nonces.len / 8;
    if (nonces.len % 8) {
        PyErr_SetString(PyExc_ValueError, "keys: nonces must be int64 words");
        PyBuffer_Release(&nonces);
        return NULL;
    }
    if (writable(out_object, &out, rows, 8, "out") != 0) {
        PyBuffer_Release(&nonces);
        return NULL;
    }
    const uint64_t *nonce = nonces.buf;
    uint64_t *key = out.buf;
    for (Py_ssize_t b = 0; b < rows; b++)
        key[b] = mix64((uint64_t)root + nonce[b] * GAMMA);
    PyBuffer_Release(&out);
    PyBuffer_Release(&nonces);
    Py_RETURN_NONE;
}

/* uniforms(keys, half, radius, angle): word j of row b is mix64(keys[b] + (j + 1) * gamma); its high 24 bits give
 * radius[b, j] = u * 2^-24 + 2^-25 and its low 24 bits angle[b, j] = v * scale + offset (float32, scale and offset
 * as float32: 2 pi 2^-24 and pi 2^-24 rounded, as torch rounds a Python scalar for a float32 tensor). */
static PyObject *stream_uniforms(PyObject *self, PyObject *args) {
    Py_buffer keys, radius, angle;
    PyObject *radius_object, *angle_object;
    Py_ssize_t half;
    double scale, offset;
    if (!PyArg_ParseTuple(args, "y*nOOdd:uniforms", &keys, &half, &radius_object, &angle_object, &scale, &offset))
        return NULL;
    Py_ssize_t rows = keys.len / 8;
    if (keys.len % 8 || half < 0) {
        PyErr_SetString(PyExc_ValueError, "uniforms: keys must be int64 words and half non-negative");
        PyBuffer_Release(&keys);
        return NULL;
    }
    if (writable(radius_object, &radius, rows * half, 4, "radius") != 0) {
        PyBuffer_Release(&keys);
        return NULL;
    }
    if (writable(angle_object, &angle, rows * half, 4, "angle") != 0) {
        PyBuffer_Release(&radius);
        PyBuffer_Release(&keys);
        return NULL;
    }
    const uint64_t *key = keys.buf;
    float *r = radius.buf, *a = angle.buf;
    const float step = 0x1p-24f, half_step = 0x1p-25f, angle_scale = (float)scale, angle_offset = (float)offset;
    const uint64_t low = (1ULL << UNIFORM_BITS) - 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < rows; b++) {
        uint64_t state = key[b];
        for (Py_ssize_t j = 0; j < half; j++) {
            state += GAMMA;
            uint64_t word = mix64(state);
            float u = (float)(int64_t)(word >> (64 - UNIFORM_BITS)) * step; /* signed: one conversion instruction */
            float v = (float)(int64_t)(word & low) * angle_scale;
            *r++ = u + half_step;
            *a++ = v + angle_offset;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&angle);
    PyBuffer_Release(&radius);
    PyBuffer_Release(&keys);
    Py_RETURN_NONE;
}

/* affine_gather(multipliers, offsets, logits, out): out[b, i] = logits[b, (multipliers[b] * i + offsets[b]) mod vocab],
 * float32 rows of vocab values (torch.gather over sprint.py's affine index maps, without materialising them), for
 * multipliers and offsets already reduced below vocab. */
static PyObject *stream_affine_gather(PyObject *self, PyObject *args) {
    Py_buffer multipliers, offsets, logits, out;
    PyObject *out_object;
    if (!PyArg_ParseTuple(args, "y*y*y*O:affine_gather", &multipliers, &offsets, &logits, &out_object))
        return NULL;
    Py_ssize_t rows = multipliers.len / 8, vocab = rows ? logits.len / 4 / rows : 0;
    if (multipliers.len % 8 || offsets.len != multipliers.len || logits.len != rows * vocab * 4 || (rows && vocab < 1)) {
        PyErr_SetString(PyExc_ValueError,
                        "affine_gather: multipliers and offsets must be int64 words of one count, logits that many "
                        "non-empty float32 rows");
        goto fail;
    }
    const int64_t *a = multipliers.buf, *o = offsets.buf;
    for (Py_ssize_t b = 0; b < rows; b++)
        if (a[b] < 0 || a[b] >= vocab || o[b] < 0 || o[b] >= vocab) {
            PyErr_Format(PyExc_ValueError, "affine_gather: row %zd's multiplier or offset lies outside [0, %zd)", b, vocab);
            goto fail;
        }
    if (writable(out_object, &out, rows * vocab, 4, "out") != 0)
        goto fail;
    const float *source = logits.buf;
    float *each = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < rows; b++, source += vocab, each += vocab) {
        /* LANES independent chains (lane k reads position i + k's index), each stepping LANES positions at a time */
        int64_t lane[LANES], stride = (int64_t)((__int128)a[b] * LANES % vocab);
        for (int k = 0; k < LANES; k++)
            lane[k] = (int64_t)(((__int128)a[b] * k + o[b]) % vocab);
        Py_ssize_t i = 0;
        for (; i + LANES <= vocab; i += LANES)
            for (int k = 0; k < LANES; k++) {
                each[i + k] = source[lane[k]];
                lane[k] += stride;
                lane[k] -= lane[k] >= vocab ? vocab : 0;
            }
        for (int k = 0; i < vocab; i++, k++)
            each[i] = source[lane[k]];
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&logits);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&multipliers);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&logits);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&multipliers);
    return NULL;
}

static PyMethodDef methods[] = {
    {"keys", stream_keys, METH_VARARGS,
     "keys(root, nonces, out): fill int64 buffer out with mix64(root + nonce * gamma) of each int64 nonce."},
    {"uniforms", stream_uniforms, METH_VARARGS,
     "uniforms(keys, half, radius, angle, scale, offset): fill float32 buffers radius and angle (rows x half) from "
     "each int64 key's splitmix64 stream: radius = high 24 bits * 2^-24 + 2^-25, angle = low 24 bits * scale + offset."},
    {"affine_gather", stream_affine_gather, METH_VARARGS,
     "affine_gather(multipliers, offsets, logits, out): fill float32 buffer out (rows x vocab) with "
     "logits[b, (multipliers[b] * i + offsets[b]) mod vocab]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_streams", "The sprint's nonce streams on CPU in one pass.", -1, methods};

PyMODINIT_FUNC PyInit__streams(void) { return PyModule_Create(&module); }
