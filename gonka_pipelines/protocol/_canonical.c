/* Canonical JSON leaves of Arrow rows in C: each row's canonical_bytes (crypto.py: sorted keys, no spaces, UTF-8,
 * floats as Python's repr) written from the columns' buffers and hashed as SHA-256(prefix || body), without a Python
 * object a row. Floats are formatted by Ryu (Ulf Adams, PLDI 2018: the shortest decimal that reads back to the same
 * double, the nearest such when several are as short), laid out as repr lays them out; tests hold every piece to
 * canonical_bytes and repr byte for byte. Rows are hashed with the GIL released, so callers split them over threads.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: the low-level calls, no per-hash algorithm fetch */
#include <Python.h>
#include <openssl/sha.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "_ryu_tables.h"

#define DIGEST 32
#define FLOAT_TEXT 32 /* the longest repr of a double is 24 bytes ("-2.2250738585072014e-308") */

/* --- Ryu: a double's shortest round-trip decimal (mantissa × 10^exponent) ------------------------------------------ */

typedef unsigned __int128 uint128_t;

static inline uint32_t pow5bits(int32_t e) { return (uint32_t)(((e * 1217359) >> 19) + 1); }   /* ceil(log2(5^e)), e > 0 */
static inline uint32_t log10_pow2(int32_t e) { return (uint32_t)((e * 78913) >> 18); }         /* floor(log10(2^e)) */
static inline uint32_t log10_pow5(int32_t e) { return (uint32_t)((e * 732923) >> 20); }        /* floor(log10(5^e)) */

static inline uint32_t pow5_factor(uint64_t value) {
    uint32_t count = 0;
    while (value % 5 == 0)
        value /= 5, count++;
    return count;
}

static inline bool multiple_of_pow5(uint64_t value, uint32_t p) { return pow5_factor(value) >= p; }
static inline bool multiple_of_pow2(uint64_t value, uint32_t p) { return (value & ((1ull << p) - 1)) == 0; }

/* (m × mul) >> j of a 128-bit multiplier, j >= 64. */
static inline uint64_t mul_shift(uint64_t m, const uint64_t *mul, int32_t j) {
    uint128_t low = (uint128_t)m * mul[0], high = (uint128_t)m * mul[1];
    return (uint64_t)(((low >> 64) + high) >> (j - 64));
}

/* The shortest decimal of a finite, nonzero double given as its IEEE mantissa and biased exponent fields. */
static void shortest_decimal(uint64_t ieee_mantissa, uint32_t ieee_exponent, uint64_t *mantissa, int32_t *exponent) {
    int32_t e2;
    uint64_t m2;
    if (ieee_exponent == 0)
        e2 = 1 - 1023 - 52 - 2, m2 = ieee_mantissa;
    else
        e2 = (int32_t)ieee_exponent - 1023 - 52 - 2, m2 = (1ull << 52) | ieee_mantissa;
    const bool accept_bounds = (m2 & 1) == 0;
    const uint64_t mv = 4 * m2;
    const uint32_t mm_shift = ieee_mantissa != 0 || ieee_exponent <= 1;
    uint64_t vr, vp, vm;
    int32_t e10;
    bool vm_trailing_zeros = false, vr_trailing_zeros = false;
    if (e2 >= 0) {
        const uint32_t q = log10_pow2(e2) - (e2 > 3);
        e10 = (int32_t)q;
        const int32_t k = DOUBLE_POW5_INV_BITCOUNT + (int32_t)pow5bits((int32_t)q) - 1;
        const int32_t i = -e2 + (int32_t)q + k;
        vr = mul_shift(4 * m2, DOUBLE_POW5_INV_SPLIT[q], i);
        vp = mul_shift(4 * m2 + 2, DOUBLE_POW5_INV_SPLIT[q], i);
        vm = mul_shift(4 * m2 - 1 - mm_shift, DOUBLE_POW5_INV_SPLIT[q], i);
        if (q <= 21) {
            if (mv % 5 == 0)
                vr_trailing_zeros = multiple_of_pow5(mv, q);
            else if (accept_bounds)
                vm_trailing_zeros = multiple_of_pow5(mv - 1 - mm_shift, q);
            else
                vp -= multiple_of_pow5(mv + 2, q);
        }
    } else {
        const uint32_t q = log10_pow5(-e2) - (-e2 > 1);
        e10 = (int32_t)q + e2;
        const int32_t i = -e2 - (int32_t)q;
        const int32_t k = (int32_t)pow5bits(i) - DOUBLE_POW5_BITCOUNT;
        const int32_t j = (int32_t)q - k;
        vr = mul_shift(4 * m2, DOUBLE_POW5_SPLIT[i], j);
        vp = mul_shift(4 * m2 + 2, DOUBLE_POW5_SPLIT[i], j);
        vm = mul_shift(4 * m2 - 1 - mm_shift, DOUBLE_POW5_SPLIT[i], j);
        if (q <= 1) {
            vr_trailing_zeros = true;
            if (accept_bounds)
                vm_trailing_zeros = mm_shift == 1;
            else
                --vp;
        } else if (q < 63) {
            vr_trailing_zeros = multiple_of_pow2(mv, q);
        }
    }
    int32_t removed = 0;
    uint8_t last_removed = 0;
    uint64_t output;
    if (vm_trailing_zeros || vr_trailing_zeros) { /* the general case (rare): exact trailing zeros decide the rounding */
        while (vp / 10 > vm / 10) {
            vm_trailing_zeros &= vm % 10 == 0;
            vr_trailing_zeros &= last_removed == 0;
            last_removed = (uint8_t)(vr % 10);
            vr /= 10, vp /= 10, vm /= 10, removed++;
        }
        if (vm_trailing_zeros) {
            while (vm % 10 == 0) {
                vr_trailing_zeros &= last_removed == 0;
                last_removed = (uint8_t)(vr % 10);
                vr /= 10, vp /= 10, vm /= 10, removed++;
            }
        }
        if (vr_trailing_zeros && last_removed == 5 && vr % 2 == 0)
            last_removed = 4; /* exactly halfway: round to even */
        output = vr + ((vr == vm && (!accept_bounds || !vm_trailing_zeros)) || last_removed >= 5);
    } else {
        bool round_up = false;
        if (vp / 100 > vm / 100) {
            round_up = vr % 100 >= 50;
            vr /= 100, vp /= 100, vm /= 100, removed += 2;
        }
        while (vp / 10 > vm / 10) {
            round_up = vr % 10 >= 5;
            vr /= 10, vp /= 10, vm /= 10, removed++;
        }
        output = vr + (vr == vm || round_up);
    }
    *mantissa = output;
    *exponent = e10 + removed;
}

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Eight digits of v < 10^8 into out, two at a time. */
static inline void write_eight(uint32_t v, char *out) {
    const uint32_t high = v / 10000, low = v % 10000;
    memcpy(out, DIGIT_PAIRS + 2 * (high / 100), 2);
    memcpy(out + 2, DIGIT_PAIRS + 2 * (high % 100), 2);
    memcpy(out + 4, DIGIT_PAIRS + 2 * (low / 100), 2);
    memcpy(out + 6, DIGIT_PAIRS + 2 * (low % 100), 2);
}

/* The decimal digits of v written to end just before `end` (20 bytes at most), eight at a time in 32-bit arithmetic
 * while v needs 64 bits, then two at a time: where they start. */
static inline char *digits_before(uint64_t v, char *end) {
    while (v >> 32) {
        const uint64_t rest = v / 100000000;
        end -= 8;
        write_eight((uint32_t)(v - rest * 100000000), end);
        v = rest;
    }
    uint32_t w = (uint32_t)v;
    while (w >= 100) {
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * (w % 100), 2);
        w /= 100;
    }
    if (w >= 10) {
        end -= 2;
        memcpy(end, DIGIT_PAIRS + 2 * w, 2);
    } else
        *--end = (char)('0' + w);
    return end;
}

/* repr(value) into out (FLOAT_TEXT bytes): its length, or -1 for a NaN or an infinity (no canonical encoding). Digits
 * d1..dn with the point after `point` of them; repr writes them positionally when -4 < point <= 16, else as
 * d1.d2..dn e±XX (two exponent digits at least), as Python's float_repr_style 'short'. */
static int write_float(double value, char *out) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    const bool negative = bits >> 63;
    const uint64_t ieee_mantissa = bits & ((1ull << 52) - 1);
    const uint32_t ieee_exponent = (uint32_t)((bits >> 52) & 0x7ff);
    if (ieee_exponent == 0x7ff)
        return -1;
    int length = 0;
    if (negative)
        out[length++] = '-';
    if (ieee_exponent == 0 && ieee_mantissa == 0) {
        memcpy(out + length, "0.0", 3);
        return length + 3;
    }
    uint64_t mantissa;
    int32_t exponent;
    shortest_decimal(ieee_mantissa, ieee_exponent, &mantissa, &exponent);
    while (mantissa % 10 == 0) /* a rounded-up last digit may leave a zero: the same number, one digit shorter */
        mantissa /= 10, exponent++;
    char buffer[24];
    const char *digits = digits_before(mantissa, buffer + sizeof buffer);
    const int count = (int)(buffer + sizeof buffer - digits);
    const int point = exponent + count;
    if (point > -4 && point <= 16) {
        if (point <= 0) {
            out[length++] = '0', out[length++] = '.';
            memset(out + length, '0', (size_t)-point), length += -point;
            memcpy(out + length, digits, (size_t)count), length += count;
        } else if (point >= count) {
            memcpy(out + length, digits, (size_t)count), length += count;
            memset(out + length, '0', (size_t)(point - count)), length += point - count;
            out[length++] = '.', out[length++] = '0';
        } else {
            memcpy(out + length, digits, (size_t)point), length += point;
            out[length++] = '.';
            memcpy(out + length, digits + point, (size_t)(count - point)), length += count - point;
        }
        return length;
    }
    out[length++] = digits[0];
    if (count > 1) {
        out[length++] = '.';
        memcpy(out + length, digits + 1, (size_t)(count - 1)), length += count - 1;
    }
    int power = point - 1;
    out[length++] = 'e', out[length++] = power < 0 ? '-' : '+';
    power = power < 0 ? -power : power;
    if (power >= 100)
        out[length++] = (char)('0' + power / 100);
    out[length++] = (char)('0' + power / 10 % 10), out[length++] = (char)('0' + power % 10);
    return length;
}

/* --- Arrow columns as JSON -------------------------------------------------------------------------------------- */

enum kind { BOOL, INT32, INT64, FLOAT64, STRING32, STRING64, LIST32, LIST64, KINDS };

/* One level of an Arrow column: its items [offset, offset + length) of validity bits, offsets and data, and for a
 * list the level of its items. */
typedef struct node {
    int kind;
    Py_ssize_t offset, length;
    Py_buffer validity, offsets, data; /* validity.buf is NULL when every item is valid; unused buffers too */
    struct node *child;
} node;

typedef struct {
    char *bytes;
    size_t size, capacity;
} text;

/* Room for `more` bytes at the end of `out`; false when memory ran out. */
static bool reserve(text *out, size_t more) {
    if (out->size + more <= out->capacity)
        return true;
    size_t capacity = out->capacity ? out->capacity : 4096;
    while (capacity < out->size + more)
        capacity *= 2;
    char *grown = realloc(out->bytes, capacity);
    if (grown == NULL)
        return false;
    out->bytes = grown, out->capacity = capacity;
    return true;
}

static inline bool append(text *out, const char *bytes, size_t size) {
    if (size == 0)
        return true;
    if (!reserve(out, size))
        return false;
    memcpy(out->bytes + out->size, bytes, size);
    out->size += size;
    return true;
}

static inline bool bit(const Py_buffer *bits, Py_ssize_t index) {
    return (((const uint8_t *)bits->buf)[index >> 3] >> (index & 7)) & 1;
}

/* What went wrong in a row, reported once the GIL is held again. */
typedef enum { FINE, NO_MEMORY, NON_FINITE, OUT_OF_BOUNDS } problem;

/* A UTF-8 text as a JSON string, escaped as Python's json (ensure_ascii off): quote, backslash and the five short
 * escapes, other control characters as \u00xx in lowercase hex; every other byte as it is. */
static problem write_string(text *out, const unsigned char *bytes, size_t size) {
    static const char hex[] = "0123456789abcdef";
    if (!reserve(out, 2 + size))
        return NO_MEMORY;
    out->bytes[out->size++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < size; i++) {
        unsigned char c = bytes[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char escape[6] = {'\\', 0, 0, 0, 0, 0};
        size_t width = 2;
        switch (c) {
        case '"': escape[1] = '"'; break;
        case '\\': escape[1] = '\\'; break;
        case '\n': escape[1] = 'n'; break;
        case '\r': escape[1] = 'r'; break;
        case '\t': escape[1] = 't'; break;
        case '\b': escape[1] = 'b'; break;
        case '\f': escape[1] = 'f'; break;
        default:
            escape[1] = 'u', escape[2] = '0', escape[3] = '0', escape[4] = hex[c >> 4], escape[5] = hex[c & 15];
            width = 6;
        }
        if (!append(out, (const char *)bytes + run, i - run) || !append(out, escape, width))
            return NO_MEMORY;
        run = i + 1;
    }
    if (!append(out, (const char *)bytes + run, size - run) || !append(out, "\"", 1))
        return NO_MEMORY;
    return FINE;
}

/* An integer in decimal into out (at least 21 bytes): its length. */
static inline int write_integer(int64_t value, char *out) {
    char buffer[24];
    char *digits = digits_before(value < 0 ? 0 - (uint64_t)value : (uint64_t)value, buffer + sizeof buffer);
    if (value < 0)
        *--digits = '-';
    const int length = (int)(buffer + sizeof buffer - digits);
    memcpy(out, digits, (size_t)length);
    return length;
}

/* The [start, end) positions an offsets buffer gives item `index`, checked against `limit`. */
static bool span(const node *level, Py_ssize_t index, Py_ssize_t limit, int64_t *start, int64_t *end) {
    Py_ssize_t at = level->offset + index;
    if (level->kind == STRING32 || level->kind == LIST32)
        *start = ((const int32_t *)level->offsets.buf)[at], *end = ((const int32_t *)level->offsets.buf)[at + 1];
    else
        *start = ((const int64_t *)level->offsets.buf)[at], *end = ((const int64_t *)level->offsets.buf)[at + 1];
    return 0 <= *start && *start <= *end && *end <= limit;
}

/* Item `at` (offset included) of a level of int32, int64 or float64 numbers into out (FLOAT_TEXT bytes): its length,
 * or -1 for a NaN or an infinity. */
static inline int write_number(const node *level, Py_ssize_t at, char *out) {
    if (level->kind == FLOAT64)
        return write_float(((const double *)level->data.buf)[at], out);
    return write_integer(level->kind == INT32 ? ((const int32_t *)level->data.buf)[at] : ((const int64_t *)level->data.buf)[at],
                         out);
}

/* Items [start, end) of a level of numbers without nulls, comma-separated: written in place, room made once. */
static problem write_numbers(text *out, const node *level, int64_t start, int64_t end) {
    if (end <= start)
        return FINE;
    if (!reserve(out, (size_t)(end - start) * (FLOAT_TEXT + 1)))
        return NO_MEMORY;
    char *at = out->bytes + out->size;
    for (int64_t item = start; item < end; item++) {
        if (item > start)
            *at++ = ',';
        const int length = write_number(level, level->offset + item, at);
        if (length < 0)
            return NON_FINITE;
        at += length;
    }
    out->size = (size_t)(at - out->bytes);
    return FINE;
}

/* Item `index` of a level as JSON. */
static problem write_item(text *out, const node *level, Py_ssize_t index) {
    Py_ssize_t at = level->offset + index;
    int length;
    int64_t start, end;
    if (level->validity.buf != NULL && !bit(&level->validity, at))
        return append(out, "null", 4) ? FINE : NO_MEMORY;
    switch (level->kind) {
    case BOOL:
        return (bit(&level->data, at) ? append(out, "true", 4) : append(out, "false", 5)) ? FINE : NO_MEMORY;
    case INT32:
    case INT64:
    case FLOAT64:
        if (!reserve(out, FLOAT_TEXT))
            return NO_MEMORY;
        if ((length = write_number(level, at, out->bytes + out->size)) < 0)
            return NON_FINITE;
        out->size += (size_t)length;
        return FINE;
    case STRING32:
    case STRING64:
        if (!span(level, index, level->data.len, &start, &end))
            return OUT_OF_BOUNDS;
        return write_string(out, (const unsigned char *)level->data.buf + start, (size_t)(end - start));
    default: /* a list */
        if (!span(level, index, level->child->length, &start, &end))
            return OUT_OF_BOUNDS;
        if (!append(out, "[", 1))
            return NO_MEMORY;
        if (level->child->validity.buf == NULL && (level->child->kind == INT32 || level->child->kind == INT64 ||
                                                   level->child->kind == FLOAT64)) {
            problem found = write_numbers(out, level->child, start, end);
            if (found != FINE)
                return found;
        } else {
            for (int64_t item = start; item < end; item++) {
                problem found;
                if (item > start && !append(out, ",", 1))
                    return NO_MEMORY;
                if ((found = write_item(out, level->child, item)) != FINE)
                    return found;
            }
        }
        return append(out, "]", 1) ? FINE : NO_MEMORY;
    }
}

/* Release every buffer of a level and those below it, and free the levels below it. */
static void release_node(node *level) {
    if (level->child != NULL) {
        release_node(level->child);
        PyMem_Free(level->child);
        level->child = NULL;
    }
    Py_buffer *buffers[] = {&level->validity, &level->offsets, &level->data};
    for (int i = 0; i < 3; i++)
        if (buffers[i]->obj != NULL)
            PyBuffer_Release(buffers[i]);
}

/* Take a buffer, or leave it empty for None; false with an exception set on anything else or a buffer too short. */
static bool take_buffer(PyObject *object, Py_buffer *view, Py_ssize_t needed, const char *what) {
    if (object == Py_None)
        return true;
    if (PyObject_GetBuffer(object, view, PyBUF_SIMPLE) != 0)
        return false;
    if (view->len < needed) {
        PyErr_Format(PyExc_ValueError, "json_digests: a column's %s buffer holds %zd bytes, %zd needed", what, view->len, needed);
        return false;
    }
    return true;
}

/* A level from its description, (kind, offset, length, validity, offsets, data, child), buffers checked to cover
 * items [offset, offset + length); false with an exception set (buffers taken so far released by release_node). */
static bool parse_node(PyObject *description, node *level) {
    PyObject *validity, *offsets, *data, *child;
    memset(level, 0, sizeof *level);
    if (!PyTuple_Check(description)) {
        PyErr_Format(PyExc_TypeError, "a column's description is %s, not a tuple", Py_TYPE(description)->tp_name);
        return false;
    }
    if (!PyArg_ParseTuple(description, "innOOOO:column", &level->kind, &level->offset, &level->length, &validity, &offsets,
                          &data, &child))
        return false;
    if (level->kind < 0 || level->kind >= KINDS || level->offset < 0 || level->length < 0 ||
        level->offset > PY_SSIZE_T_MAX / 16 - level->length) { /* items × 8 bytes and their bounds cannot overflow */
        PyErr_Format(PyExc_ValueError, "a column of kind %d, offset %zd, length %zd", level->kind, level->offset,
                     level->length);
        return false;
    }
    const Py_ssize_t items = level->offset + level->length;
    static const Py_ssize_t widths[] = {0, 4, 8, 8, 0, 0, 0, 0};
    const bool listed = level->kind == LIST32 || level->kind == LIST64;
    const Py_ssize_t offset_width = (level->kind == STRING32 || level->kind == LIST32) ? 4 : 8;
    if (!take_buffer(validity, &level->validity, (items + 7) / 8, "validity"))
        return false;
    if (level->kind >= STRING32 && (offsets == Py_None || !take_buffer(offsets, &level->offsets, (items + 1) * offset_width, "offsets"))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "json_digests: a text or list column without offsets");
        return false;
    }
    if (!listed && (data == Py_None ? items > 0 && level->kind != STRING32 && level->kind != STRING64
                                    : !take_buffer(data, &level->data, level->kind == BOOL ? (items + 7) / 8 : items * widths[level->kind], "data"))) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "json_digests: a column without its data buffer");
        return false;
    }
    if (level->kind >= STRING32 && !listed && level->data.obj == NULL) { /* texts all empty: no data buffer */
        static char nothing;
        level->data.buf = &nothing, level->data.len = 0;
    }
    if (listed) {
        if (child == Py_None) {
            PyErr_SetString(PyExc_ValueError, "json_digests: a list column without its items");
            return false;
        }
        level->child = PyMem_Calloc(1, sizeof(node));
        if (level->child == NULL) {
            PyErr_NoMemory();
            return false;
        }
        return parse_node(child, level->child);
    }
    return true;
}

static PyObject *NonFiniteFloat; /* _canonical.NonFiniteFloat, a ValueError: a NaN or an infinity has no canonical JSON */

/* Rows [start, end) of the columns as canonical JSON objects, each after `prefix`: hashed (SHA-256, the digests end to
 * end in a bytes object) or written out (a list of bytes objects). keys[i] is the JSON of a key (a tuple, in the order
 * canonical_bytes sorts them), columns[i] its column as parse_node reads it; errors number the rows from `first`. */
static PyObject *rows_as_json(PyObject *args, bool hashed) {
    const char *name = hashed ? "json_digests" : "json_texts";
    Py_buffer prefix;
    Py_ssize_t start, end, first;
    PyObject *keys, *columns;
    if (!PyArg_ParseTuple(args, "y*nnnO!O!", &prefix, &start, &end, &first, &PyTuple_Type, &keys, &PyList_Type, &columns))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = PyList_GET_SIZE(columns), parsed = 0;
    node *levels = PyMem_Calloc((size_t)(count ? count : 1), sizeof(node));
    const char **key_bytes = PyMem_Calloc((size_t)(count ? count : 1), sizeof(char *));
    Py_ssize_t *key_sizes = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Py_ssize_t));
    size_t *ends = NULL; /* written out: where each row's text ends in `written` */
    text body = {NULL, 0, 0}, written = {NULL, 0, 0};
    if (levels == NULL || key_bytes == NULL || key_sizes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (PyTuple_GET_SIZE(keys) != count) {
        PyErr_Format(PyExc_ValueError, "%s: %zd keys for %zd columns", name, PyTuple_GET_SIZE(keys), count);
        goto done;
    }
    if (start < 0 || start > end) {
        PyErr_Format(PyExc_ValueError, "%s: rows [%zd, %zd)", name, start, end);
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i); /* a tuple's items stay while the GIL is released */
        if (!PyBytes_Check(key)) {
            PyErr_Format(PyExc_TypeError, "%s: key %zd is %s, not bytes", name, i, Py_TYPE(key)->tp_name);
            goto done;
        }
        key_bytes[i] = PyBytes_AS_STRING(key), key_sizes[i] = PyBytes_GET_SIZE(key);
        parsed = i + 1;
        if (!parse_node(PyList_GET_ITEM(columns, i), &levels[i]))
            goto done;
        if (end > levels[i].length) {
            PyErr_Format(PyExc_ValueError, "%s: rows [%zd, %zd) of a column of %zd", name, start, end, levels[i].length);
            goto done;
        }
    }
    unsigned char *out = NULL;
    if (hashed) {
        if ((result = PyBytes_FromStringAndSize(NULL, (end - start) * DIGEST)) == NULL)
            goto done;
        out = (unsigned char *)PyBytes_AS_STRING(result);
    } else if ((ends = PyMem_Malloc((size_t)(end - start + 1) * sizeof(size_t))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    problem found = FINE;
    Py_ssize_t bad_row = 0, bad_column = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = start; row < end && found == FINE; row++) {
        body.size = 0;
        for (Py_ssize_t i = 0; i < count && found == FINE; i++) {
            if (!append(&body, i ? "," : "{", 1) || !append(&body, key_bytes[i], (size_t)key_sizes[i]) || !append(&body, ":", 1))
                found = NO_MEMORY;
            else
                found = write_item(&body, &levels[i], row);
            bad_row = row, bad_column = i;
        }
        if (found == FINE && !append(&body, count ? "}" : "{}", count ? 1 : 2))
            found = NO_MEMORY;
        if (found == FINE && hashed) {
            SHA256_CTX context;
            SHA256_Init(&context);
            SHA256_Update(&context, prefix.buf, (size_t)prefix.len);
            SHA256_Update(&context, body.bytes, body.size);
            SHA256_Final(out + (row - start) * DIGEST, &context);
        } else if (found == FINE) {
            if (!append(&written, prefix.buf, (size_t)prefix.len) || !append(&written, body.bytes, body.size))
                found = NO_MEMORY;
            ends[row - start] = written.size;
        }
    }
    Py_END_ALLOW_THREADS
    if (found != FINE) {
        Py_CLEAR(result);
        if (found == NO_MEMORY)
            PyErr_NoMemory();
        else
            PyErr_Format(found == NON_FINITE ? NonFiniteFloat : PyExc_ValueError,
                         found == NON_FINITE ? "row %zd's %s holds a non-finite float (NaN or infinity)"
                                             : "row %zd's %s has offsets outside its buffers",
                         first + bad_row - start, key_bytes[bad_column]);
        goto done;
    }
    if (!hashed && (result = PyList_New(end - start)) != NULL) {
        for (Py_ssize_t row = 0; row < end - start; row++) {
            size_t begin = row ? ends[row - 1] : 0;
            PyObject *item = PyBytes_FromStringAndSize(written.bytes + begin, (Py_ssize_t)(ends[row] - begin));
            if (item == NULL) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, row, item);
        }
    }
done:
    free(body.bytes);
    free(written.bytes);
    PyMem_Free(ends);
    for (Py_ssize_t i = 0; i < parsed; i++)
        release_node(&levels[i]);
    PyMem_Free(levels);
    PyMem_Free(key_bytes);
    PyMem_Free(key_sizes);
    PyBuffer_Release(&prefix);
    return result;
}

static PyObject *json_digests(PyObject *Py_UNUSED(module), PyObject *args) { return rows_as_json(args, true); }

static PyObject *json_texts(PyObject *Py_UNUSED(module), PyObject *args) { return rows_as_json(args, false); }

/* reprs(values): repr of each double of a float64 buffer, joined by newlines (the formatter on its own, for tests). */
static PyObject *reprs(PyObject *Py_UNUSED(module), PyObject *values) {
    Py_buffer view;
    if (PyObject_GetBuffer(values, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = view.len / (Py_ssize_t)sizeof(double);
    char *joined = PyMem_Malloc((size_t)(count * (FLOAT_TEXT + 1) + 1));
    if (view.len % (Py_ssize_t)sizeof(double) != 0)
        PyErr_Format(PyExc_ValueError, "reprs: %zd bytes are not float64 values", view.len);
    else if (joined == NULL)
        PyErr_NoMemory();
    else {
        Py_ssize_t size = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            double value;
            memcpy(&value, (const char *)view.buf + i * (Py_ssize_t)sizeof(double), sizeof value);
            int length = write_float(value, joined + size);
            if (length < 0) {
                PyErr_Format(PyExc_ValueError, "reprs: value %zd is not finite", i);
                break;
            }
            size += length;
            if (i + 1 < count)
                joined[size++] = '\n';
        }
        if (!PyErr_Occurred())
            result = PyBytes_FromStringAndSize(joined, size);
    }
    PyMem_Free(joined);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"json_digests", json_digests, METH_VARARGS,
     "json_digests(prefix, start, end, first, keys, columns) -> bytes: SHA-256(prefix || the canonical JSON object of row "
     "i) of rows [start, end), digests end to end. keys: a tuple of each key's JSON as bytes, in canonical order; columns: "
     "each its Arrow column as (kind, offset, length, validity, offsets, data, child) levels; errors number rows from first."},
    {"json_texts", json_texts, METH_VARARGS,
     "json_texts(prefix, start, end, first, keys, columns) -> list[bytes]: prefix || the canonical JSON object of row i, of rows "
     "[start, end) (as json_digests, written out rather than hashed)."},
    {"reprs", reprs, METH_O, "reprs(values) -> bytes: repr of each float64 of a buffer, joined by newlines."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_canonical",
                                    "Canonical JSON leaves of Arrow rows: written from the buffers and hashed in C.", -1, methods};

PyMODINIT_FUNC PyInit__canonical(void) {
    PyObject *created = PyModule_Create(&module);
    if (created == NULL)
        return NULL;
    NonFiniteFloat = PyErr_NewExceptionWithDoc("_canonical.NonFiniteFloat", "A NaN or an infinity: no canonical JSON holds it.",
                                               PyExc_ValueError, NULL);
    if (NonFiniteFloat == NULL || PyModule_AddObjectRef(created, "NonFiniteFloat", NonFiniteFloat) < 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
