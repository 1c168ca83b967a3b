/* An honest validator's verdicts on a batch of outputs of one length (protocol/inference_validation.py), in one pass per
 * output without temporaries: the forced choice at each position, whether every choice is the executor's token, the
 * top-k similarity and the verdict. inference_validation.py's numpy functions (forced_choices, similarities,
 * compare_batch) define them; this produces the same bits: comparisons and the two-smallest search are exact, each
 * float step is one IEEE operation in numpy's order (built with -ffp-contract=off so none is fused), and each output's
 * terms are summed as numpy's pairwise summation sums a row. tests/protocol holds it to the numpy functions. In numpy
 * a million outputs of 8 positions by top-5 took about a dozen passes over arrays of 40 million values.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define PAIRWISE_BLOCK 128 /* numpy's PW_BLOCKSIZE: rows this long are summed in 8 lanes, longer ones split in two */

enum { SIMILAR = 0, DISSIMILAR = 1, TOKENS_DIFFER = 2 };

/* numpy's pairwise_sum of n doubles (loops_utils.h): 8 lanes up to PAIRWISE_BLOCK, halves (a multiple of 8) above. */
static double pairwise_sum(const double *a, Py_ssize_t n) {
    if (n < 8) {
        double sum = 0.;
        for (Py_ssize_t i = 0; i < n; i++)
            sum += a[i];
        return sum;
    }
    if (n <= PAIRWISE_BLOCK) {
        double r[8];
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        Py_ssize_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            sum += a[i];
        return sum;
    }
    Py_ssize_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

/* a sorts before b as numpy's sort orders doubles: by value, NaN last. */
static inline int before(double a, double b) { return a < b || (isnan(b) && !isnan(a)); }

/* One id of an int32 or int64 array. */
static inline int64_t id_at(const void *ids, int wide, Py_ssize_t i) {
    return wide ? ((const int64_t *)ids)[i] : ((const int32_t *)ids)[i];
}

/* What judge reads or writes: ids (int32 or int64, told by the buffer's length), float64 read, or bytes or float64
 * written; each C-contiguous with exactly `count` items. */
typedef enum { IDS, DOUBLES, BYTES_OUT, DOUBLES_OUT } Kind;

/* The buffer of one argument, or -1 with an exception set; *wide tells int64 ids from int32. */
static int argument_buffer(PyObject *object, Py_buffer *view, Kind kind, Py_ssize_t count, int *wide, const char *name) {
    int writable = kind == BYTES_OUT || kind == DOUBLES_OUT;
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0)
        return -1;
    Py_ssize_t itemsize = kind == BYTES_OUT ? 1 : 8;
    if (kind == IDS && count > 0 && view->len == count * 4)
        *wide = 0;
    else if (view->len == count * itemsize)
        *wide = 1;
    else {
        PyErr_Format(PyExc_ValueError, "judge: %s holds %zd bytes, not %zd %s", name, view->len, count,
                     kind == IDS ? "int32 or int64 ids" : kind == BYTES_OUT ? "bytes" : "float64 values");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

typedef struct {
    Py_ssize_t outputs, positions, e_width, v_width;
    const void *tokens, *e_ids, *v_ids;
    int tokens_wide, e_wide, v_wide;
    const double *e_lp, *v_lp;
    double tie_tolerance, threshold, epsilon, denominator;
    uint8_t *passed;
    double *similarity;
    int8_t *reason;
    double *terms; /* positions * v_width scratch */
} Batch;

/* forced_choices' test at one position: is the validator's token the executor's? It is where the re-run holds the
 * executor's token (its last entry of it) within tie_tolerance of its best; otherwise the choice is the re-run's best,
 * which may still be the executor's token. */
static int chooses_token(const Batch *b, Py_ssize_t output, Py_ssize_t position) {
    Py_ssize_t row = (output * b->positions + position) * b->v_width;
    int64_t token = id_at(b->tokens, b->tokens_wide, output * b->positions + position);
    Py_ssize_t last = -1;
    for (Py_ssize_t j = b->v_width - 1; j >= 0 && last < 0; j--)
        if (id_at(b->v_ids, b->v_wide, row + j) == token)
            last = j;
    int kept = last >= 0 && b->v_lp[row + last] >= b->v_lp[row] - b->tie_tolerance;
    return kept || id_at(b->v_ids, b->v_wide, row) == token;
}

/* similarities' score of one output: sum over positions and the validator's k tokens of
 * |lp_v - lp_o| / (eps + |lp_v| + |lp_o|) / 2, where lp_o is the executor's log-prob of its first entry of that id,
 * else m1 - (m2 - m1) of its two smallest; 1 - sum / denominator, floored at 0. */
static double similarity_of(const Batch *b, Py_ssize_t output) {
    Py_ssize_t n = 0;
    for (Py_ssize_t p = 0; p < b->positions; p++) {
        Py_ssize_t e_row = (output * b->positions + p) * b->e_width, v_row = (output * b->positions + p) * b->v_width;
        const double *e_lp = b->e_lp + e_row;
        double first = e_lp[0], second = e_lp[1];
        if (before(second, first)) {
            first = e_lp[1];
            second = e_lp[0];
        }
        for (Py_ssize_t j = 2; j < b->e_width; j++) {
            if (before(e_lp[j], first)) {
                second = first;
                first = e_lp[j];
            } else if (before(e_lp[j], second))
                second = e_lp[j];
        }
        double missing = first - (second - first);
        for (Py_ssize_t k = 0; k < b->v_width; k++) {
            int64_t id = id_at(b->v_ids, b->v_wide, v_row + k);
            double lp_o = missing;
            for (Py_ssize_t j = 0; j < b->e_width; j++)
                if (id_at(b->e_ids, b->e_wide, e_row + j) == id) {
                    lp_o = e_lp[j];
                    break;
                }
            double lp_v = b->v_lp[v_row + k];
            double term = fabs(lp_v - lp_o);
            term /= (b->epsilon + fabs(lp_v)) + fabs(lp_o);
            term /= 2;
            b->terms[n++] = term;
        }
    }
    double score = 1.0 - pairwise_sum(b->terms, n) / b->denominator;
    return score > 0.0 ? score : 0.0;
}

static void judge_all(const Batch *b) {
    for (Py_ssize_t output = 0; output < b->outputs; output++) {
        int same = 1;
        for (Py_ssize_t p = 0; p < b->positions && same; p++)
            same = chooses_token(b, output, p);
        double score = same ? similarity_of(b, output) : 0.0;
        int passed = same && score > b->threshold;
        b->passed[output] = (uint8_t)passed;
        b->similarity[output] = score;
        b->reason[output] = (int8_t)(!same ? TOKENS_DIFFER : passed ? SIMILAR : DISSIMILAR);
    }
}

/* judge(tokens, e_ids, e_lp, v_ids, v_lp, outputs, positions, e_width, v_width, tie_tolerance, threshold, epsilon,
 * denominator, passed, similarity, reason): each output's verdict into passed (bool), similarity (float64) and reason
 * (int8: 0 similar, 1 dissimilar, 2 tokens differ). Ids are C-contiguous int32 or int64 ((outputs, positions) tokens,
 * (outputs, positions, width) top-k), log-probs float64; e_width >= 2 and v_width >= 1. */
static PyObject *judge(PyObject *self, PyObject *args) {
    PyObject *objects[8];
    Batch b;
    if (!PyArg_ParseTuple(args, "OOOOOnnnnddddOOO:judge", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4],
                          &b.outputs, &b.positions, &b.e_width, &b.v_width, &b.tie_tolerance, &b.threshold, &b.epsilon,
                          &b.denominator, &objects[5], &objects[6], &objects[7]))
        return NULL;
    if (b.outputs < 0 || b.positions < 1 || b.e_width < 2 || b.v_width < 1 || !(b.denominator > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "judge: needs outputs >= 0, positions >= 1, e_width >= 2, v_width >= 1 and a "
                                          "positive denominator");
        return NULL;
    }
    Py_ssize_t widest = b.e_width > b.v_width ? b.e_width : b.v_width;
    if (b.positions > PY_SSIZE_T_MAX / 8 / widest || b.outputs > PY_SSIZE_T_MAX / 8 / widest / b.positions) {
        PyErr_SetString(PyExc_OverflowError, "judge: the batch is too large");
        return NULL;
    }
    Py_ssize_t cells = b.outputs * b.positions;
    static const char *names[8] = {"tokens", "e_ids", "e_lp", "v_ids", "v_lp", "passed", "similarity", "reason"};
    const Kind kinds[8] = {IDS, IDS, DOUBLES, IDS, DOUBLES, BYTES_OUT, DOUBLES_OUT, BYTES_OUT};
    const Py_ssize_t counts[8] = {cells, cells * b.e_width, cells * b.e_width, cells * b.v_width, cells * b.v_width,
                                  b.outputs, b.outputs, b.outputs};
    int wide[8];
    Py_buffer views[8];
    int got = 0;
    while (got < 8 && argument_buffer(objects[got], &views[got], kinds[got], counts[got], &wide[got], names[got]) == 0)
        got++;
    b.terms = got == 8 ? PyMem_RawMalloc((size_t)(b.positions * b.v_width) * sizeof(double)) : NULL;
    if (got == 8 && b.terms == NULL)
        PyErr_NoMemory();
    if (b.terms != NULL) {
        b.tokens = views[0].buf, b.e_ids = views[1].buf, b.e_lp = views[2].buf, b.v_ids = views[3].buf;
        b.v_lp = views[4].buf, b.passed = views[5].buf, b.similarity = views[6].buf, b.reason = views[7].buf;
        b.tokens_wide = wide[0], b.e_wide = wide[1], b.v_wide = wide[3];
        Py_BEGIN_ALLOW_THREADS
        judge_all(&b);
        Py_END_ALLOW_THREADS
    }
    int ok = b.terms != NULL;
    PyMem_RawFree(b.terms);
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"judge", judge, METH_VARARGS, "An honest validator's verdicts on a batch of outputs of one length."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_comparison", NULL, -1, methods};

PyMODINIT_FUNC PyInit__comparison(void) { return PyModule_Create(&module); }
