/* The hot loop of `sbt audit verify` in C: app/audit/rowcheck.py's check of stored rows, for the common row.
 *
 * A row is vouched for when (a) it holds only text, integers (not bool) and NULL, with `occurred_at` and
 * `resource_ids` in the forms the service stores, (b) it has the expected seq and links to the hash before
 * it, and (c) the SHA-256 of its canonical text, built byte for byte as canonical.plain_row_json builds it,
 * is its stored hash. Both entry points stop at the first row they do not vouch for; the Python loop then
 * decides that row in full (it may be good after all: an unusual spelling the reference accepts) and
 * resumes here after it. So this code can only make verification faster, never change its answer, as
 * long as the text it builds for a row is the text Python builds: tests/audit_perf compares the two.
 *
 * - check_rows() takes rows already fetched (tuples in rowcheck.ROW_FIELDS order), where neither reader
 *   below can be used.
 * - SqliteReader reads the rows itself through SQLite's C API, so that no Python object is made per value
 *   (the driver's 21 objects a row cost more than building and hashing the text). It calls the SQLite
 *   library Python's own sqlite3 module uses, looked up through that module (two copies of SQLite in one
 *   process would break each other's file locks), on a read-only connection of its own.
 * - PgReader does the same on PostgreSQL through libpq, on psycopg's own connection (so in its transaction
 *   and snapshot), with results in binary: the server then formats no timestamp, and the reader prints the
 *   instant itself.
 *
 * SHA-256 is OpenSSL's, through one reused EVP context: hashlib creates and frees a context per call, which
 * costs more than hashing the ~700 bytes of an event.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

enum { F_SEQ, F_ID, F_OCCURRED_AT, F_REQUEST_ID, F_KIND, F_TOKEN_ID, F_AGENCY, F_ACTION, F_OUTCOME,
       F_STATUS_CODE, F_METHOD, F_PATH, F_QUERY, F_RESOURCE_TYPE, F_RESOURCE_IDS, F_CLIENT_IP,
       F_USER_AGENT, F_PURPOSE, F_DETAIL, F_PREV_HASH, F_HASH, N_FIELDS };

/* How `occurred_at` arrives: SQLite's stored text, or PostgreSQL's already formatted by the query. */
enum { INSTANT_SQLITE = 0, INSTANT_FORMATTED = 1 };

static const char HEX[] = "0123456789abcdef";

/* --- one stored value -------------------------------------------------------------------------------- */

typedef enum { CELL_NULL, CELL_INT, CELL_TEXT, CELL_OTHER } CellKind;

typedef struct {
    CellKind kind;
    long long integer;
    const char *text; /* UTF-8, valid; not NUL-terminated */
    Py_ssize_t len;
    PyObject *object; /* the Python value, where the row came from Python (borrowed), else NULL */
} Cell;

/* A Python value as a cell: str (not a lone surrogate), int within 64 bits, None; anything else OTHER. */
static Cell cell_of_object(PyObject *value) {
    Cell cell = {CELL_OTHER, 0, NULL, 0, value};
    if (value == Py_None) {
        cell.kind = CELL_NULL;
    } else if (PyUnicode_CheckExact(value)) {
        cell.text = PyUnicode_AsUTF8AndSize(value, &cell.len);
        if (cell.text == NULL)
            PyErr_Clear();
        else
            cell.kind = CELL_TEXT;
    } else if (PyLong_CheckExact(value)) {
        int overflow;
        cell.integer = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || (cell.integer == -1 && PyErr_Occurred()))
            PyErr_Clear();
        else
            cell.kind = CELL_INT;
    }
    return cell;
}

/* Eight bytes at a time (the hot loops scan ~700 bytes a row): a word of input, and whether any of its
 * bytes is >= 0x80, or is < 0x20, '"' or '\\' (the bytes a JSON string escapes). Exact, not a heuristic. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t word_at(const char *s) {
    uint64_t x;
    memcpy(&x, s, 8);
    return x;
}

static inline int has_zero_byte(uint64_t x) { return ((x - ONES) & ~x & HIGHS) != 0; }

static inline int needs_escape(uint64_t x) {
    return ((x - 0x20 * ONES) & ~x & HIGHS) != 0 || has_zero_byte(x ^ ('"' * ONES))
           || has_zero_byte(x ^ ('\\' * ONES));
}

/* Whether bytes are UTF-8 that Python's strict decoder accepts (no overlong forms, no surrogates, nothing
 * past U+10FFFF): text the sqlite3 module could not turn into a str must not be vouched for. */
static int valid_utf8(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        if (i + 8 <= n && (word_at((const char *)s + i) & HIGHS) == 0) {
            i += 8;
            continue;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t need;
        unsigned char low = 0x80, high = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) low = 0xA0;
            if (c == 0xED) high = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) low = 0x90;
            if (c == 0xF4) high = 0x8F;
        } else {
            return 0;
        }
        if (n - i <= need) return 0;
        if (s[i + 1] < low || s[i + 1] > high) return 0;
        for (Py_ssize_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += need + 1;
    }
    return 1;
}

/* --- the canonical text ------------------------------------------------------------------------------ */

typedef struct {
    char *data;
    size_t len, cap;
} Buffer;

static int grow(Buffer *b, size_t n) {
    size_t cap = b->cap * 2;
    while (cap < b->len + n) cap *= 2;
    char *grown = PyMem_Realloc(b->data, cap);
    if (grown == NULL) return -1;
    b->data = grown;
    b->cap = cap;
    return 0;
}

static inline int put(Buffer *b, const char *s, size_t n) {
    if (b->len + n > b->cap && grow(b, n)) return -1;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

#define PUT_LITERAL(b, s) put((b), (s), sizeof(s) - 1)

/* A JSON string of UTF-8 as json.dumps(..., ensure_ascii=False) writes it: quote, backslash and the control
 * characters escaped (the five with a short form, the rest as \u00xx), everything else as it is. */
static int put_string(Buffer *b, const char *s, Py_ssize_t n) {
    if (PUT_LITERAL(b, "\"")) return -1;
    Py_ssize_t from = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        while (i + 8 <= n && !needs_escape(word_at(s + i))) i += 8;
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (put(b, s + from, (size_t)(i - from))) return -1;
        from = i + 1;
        char escape[6] = {'\\', 'u', '0', '0', HEX[c >> 4], HEX[c & 15]};
        const char *out = escape;
        size_t len = 2;
        switch (c) {
        case '"': out = "\\\""; break;
        case '\\': out = "\\\\"; break;
        case '\n': out = "\\n"; break;
        case '\r': out = "\\r"; break;
        case '\t': out = "\\t"; break;
        case '\b': out = "\\b"; break;
        case '\f': out = "\\f"; break;
        default: len = 6;
        }
        if (put(b, out, len)) return -1;
    }
    if (put(b, s + from, (size_t)(n - from)) || PUT_LITERAL(b, "\"")) return -1;
    return 0;
}

/* The return convention of the put_* below: 1 written, 0 not vouched for, -1 out of memory. */

static int put_value(Buffer *b, const Cell *cell) {
    switch (cell->kind) {
    case CELL_NULL: return PUT_LITERAL(b, "null") ? -1 : 1;
    case CELL_TEXT: return put_string(b, cell->text, cell->len) ? -1 : 1;
    case CELL_INT: {
        char digits[24];
        char *end = digits + sizeof digits, *at = end;
        unsigned long long v = cell->integer < 0 ? 0ULL - (unsigned long long)cell->integer
                                                 : (unsigned long long)cell->integer;
        do *--at = (char)('0' + v % 10); while ((v /= 10) != 0);
        if (cell->integer < 0) *--at = '-';
        return put(b, at, (size_t)(end - at)) ? -1 : 1;
    }
    default: return 0;
    }
}

static int digits(const char *s, int from, int to, int *out) {
    int v = 0;
    for (int i = from; i < to; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

static int days_in_month(int year, int month) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)) return 29;
    return days[month - 1];
}

/* `occurred_at` as JSON. SQLite: only "YYYY-MM-DD HH:MM:SS.ffffff" with a real date and time and a year
 * from 1000 (each such text is one canonical.sqlite_instant_json accepts, and it writes the same digits
 * with T and Z); PostgreSQL: the query's text, quoted (as rowcheck._quoted does). */
static int put_instant(Buffer *b, const Cell *cell, int mode) {
    if (cell->kind != CELL_TEXT) return 0;
    const char *s = cell->text;
    if (mode == INSTANT_FORMATTED) {
        for (Py_ssize_t i = 0; i < cell->len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == '"' || s[i] == '\\') return 0;
        return (PUT_LITERAL(b, "\"") || put(b, s, (size_t)cell->len) || PUT_LITERAL(b, "\"")) ? -1 : 1;
    }
    int year, month, day, hour, minute, second, micro;
    if (cell->len != 26 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':'
        || s[19] != '.' || !digits(s, 0, 4, &year) || !digits(s, 5, 7, &month) || !digits(s, 8, 10, &day)
        || !digits(s, 11, 13, &hour) || !digits(s, 14, 16, &minute) || !digits(s, 17, 19, &second)
        || !digits(s, 20, 26, &micro))
        return 0;
    if (year < 1000 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23
        || minute > 59 || second > 59)
        return 0;
    if (PUT_LITERAL(b, "\"") || put(b, s, 10) || PUT_LITERAL(b, "T") || put(b, s + 11, 15)
        || PUT_LITERAL(b, "Z\""))
        return -1;
    return 1;
}

/* `resource_ids` as JSON from the stored text of a list of strings: only `[]` or `["a", "b"]` (", " or ","
 * between items, no other space, no escapes), which is that list's JSON with the spaces dropped. */
static int put_id_list(Buffer *b, const Cell *cell) {
    if (cell->kind != CELL_TEXT) return 0;
    const char *s = cell->text;
    Py_ssize_t n = cell->len;
    if (n < 2 || s[0] != '[' || s[n - 1] != ']') return 0;
    if (n == 2) return PUT_LITERAL(b, "[]") ? -1 : 1;
    if (PUT_LITERAL(b, "[")) return -1;
    Py_ssize_t i = 1, end = n - 1;
    for (;;) {
        if (i >= end || s[i] != '"') return 0;
        Py_ssize_t start = i++;
        while (i < end && s[i] != '"') {
            if ((unsigned char)s[i] < 0x20 || s[i] == '\\') return 0;
            i++;
        }
        if (i >= end) return 0;
        i++; /* the closing quote */
        if (put(b, s + start, (size_t)(i - start))) return -1;
        if (i == end) break;
        if (s[i] != ',') return 0;
        i++;
        if (i < end && s[i] == ' ') i++;
        if (PUT_LITERAL(b, ",")) return -1;
    }
    return PUT_LITERAL(b, "]") ? -1 : 1;
}

/* The last short detail a reader met and its JSON: most rows repeat the one before (`{}`), and then no
 * Python object need be made to look it up. The same stored text always has the same JSON. */
typedef struct {
    CellKind kind; /* CELL_OTHER: none yet */
    size_t text_len, json_len;
    char text[240], json[480];
} DetailMemo;

/* The detail's JSON for stored text or NULL: from the memo (rows read by a reader), else the cache dict
 * (keyed by the stored str or None), else from `make(stored)`, which fills the cache. 0 for another kind,
 * or when the maker raises. */
static int put_detail(Buffer *b, const Cell *cell, PyObject *cache, PyObject *make, DetailMemo *memo) {
    if (cell->kind != CELL_TEXT && cell->kind != CELL_NULL) return 0;
    int memoable = memo != NULL && cell->object == NULL && (size_t)cell->len <= sizeof memo->text;
    if (memoable && memo->kind == cell->kind
        && (cell->kind == CELL_NULL
            || (memo->text_len == (size_t)cell->len && memcmp(memo->text, cell->text, memo->text_len) == 0)))
        return put(b, memo->json, memo->json_len) ? -1 : 1;
    PyObject *key = cell->object;
    PyObject *made_key = NULL;
    if (key == NULL) {
        key = made_key = cell->kind == CELL_NULL ? Py_NewRef(Py_None)
                                                 : PyUnicode_DecodeUTF8(cell->text, cell->len, "strict");
        if (key == NULL) {
            PyErr_Clear();
            return 0;
        }
    }
    PyObject *json = PyDict_GetItemWithError(cache, key); /* borrowed */
    PyObject *made = NULL;
    if (json == NULL && !PyErr_Occurred()) json = made = PyObject_CallOneArg(make, key);
    int result = 0;
    if (json != NULL && PyUnicode_CheckExact(json)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(json, &n);
        if (s != NULL) result = put(b, s, (size_t)n) ? -1 : 1;
        if (result == 1 && memoable && (size_t)n <= sizeof memo->json) {
            memo->kind = cell->kind;
            memo->text_len = cell->kind == CELL_TEXT ? (size_t)cell->len : 0;
            if (memo->text_len != 0) memcpy(memo->text, cell->text, memo->text_len);
            memo->json_len = (size_t)n;
            memcpy(memo->json, s, memo->json_len);
        }
    }
    PyErr_Clear();
    Py_XDECREF(made);
    Py_XDECREF(made_key);
    return result;
}

/* Each key of the canonical text, in its sorted order, with the field that follows it. */
static const struct {
    const char *key;
    size_t len;
    int field;
} LAYOUT[] = {
#define KEY(text, field) {text, sizeof(text) - 1, field}
    KEY("{\"action\":", F_ACTION),
    KEY(",\"actor\":{\"agency\":", F_AGENCY),
    KEY(",\"kind\":", F_KIND),
    KEY(",\"token_id\":", F_TOKEN_ID),
    KEY("},\"client_ip\":", F_CLIENT_IP),
    KEY(",\"detail\":", F_DETAIL),
    KEY(",\"id\":", F_ID),
    KEY(",\"method\":", F_METHOD),
    KEY(",\"occurred_at\":", F_OCCURRED_AT),
    KEY(",\"outcome\":", F_OUTCOME),
    KEY(",\"path\":", F_PATH),
    KEY(",\"prev_hash\":", F_PREV_HASH),
    KEY(",\"purpose\":", F_PURPOSE),
    KEY(",\"query\":", F_QUERY),
    KEY(",\"request_id\":", F_REQUEST_ID),
    KEY(",\"resource_ids\":", F_RESOURCE_IDS),
    KEY(",\"resource_type\":", F_RESOURCE_TYPE),
    KEY(",\"seq\":", F_SEQ),
    KEY(",\"status_code\":", F_STATUS_CODE),
    KEY(",\"user_agent\":", F_USER_AGENT),
#undef KEY
};

/* The canonical text of a row's cells into b (emptied first). */
static int row_text(Buffer *b, const Cell *cells, int mode, PyObject *details, PyObject *make_detail,
                    DetailMemo *memo) {
    b->len = 0;
    for (size_t k = 0; k < sizeof LAYOUT / sizeof LAYOUT[0]; k++) {
        if (put(b, LAYOUT[k].key, LAYOUT[k].len)) return -1;
        const Cell *cell = &cells[LAYOUT[k].field];
        int done;
        switch (LAYOUT[k].field) {
        case F_OCCURRED_AT: done = put_instant(b, cell, mode); break;
        case F_RESOURCE_IDS: done = put_id_list(b, cell); break;
        case F_DETAIL: done = put_detail(b, cell, details, make_detail, memo); break;
        default: done = put_value(b, cell); break;
        }
        if (done != 1) return done;
    }
    return PUT_LITERAL(b, "}") ? -1 : 1;
}

/* --- the walk ------------------------------------------------------------------------------------------ */

static EVP_MD *SHA256_MD;

typedef struct {
    EVP_MD_CTX *hash;
    Buffer text;
    long long expected;
    char prev[64]; /* the hash the next row must link to, when have_prev */
    int have_prev;
    int mode;
    PyObject *details, *make_detail;
    DetailMemo memo;
} Walk;

static int walk_open(Walk *w, long long expected, PyObject *prev, int mode, PyObject *details,
                     PyObject *make_detail) {
    w->hash = EVP_MD_CTX_new();
    w->text.data = PyMem_Malloc(2048);
    w->text.len = 0;
    w->text.cap = 2048;
    w->expected = expected;
    w->mode = mode;
    w->details = details;
    w->make_detail = make_detail;
    w->have_prev = 0;
    w->memo.kind = CELL_OTHER;
    if (w->hash == NULL || w->text.data == NULL) return -1;
    if (prev != Py_None) {
        Py_ssize_t n;
        const char *s = PyUnicode_CheckExact(prev) ? PyUnicode_AsUTF8AndSize(prev, &n) : NULL;
        if (s == NULL) PyErr_Clear();
        if (s != NULL && n == 64) {
            memcpy(w->prev, s, 64);
            w->have_prev = 1;
        } else {
            w->have_prev = -1; /* not a hash as stored: the first row goes to Python */
        }
    }
    return 0;
}

static void walk_close(Walk *w) {
    EVP_MD_CTX_free(w->hash);
    PyMem_Free(w->text.data);
}

/* The row's `prev` and `expected` after it, or why not: 1 vouched for, 0 not, -1 out of memory, -2 OpenSSL
 * failed. */
static int walk_row(Walk *w, const Cell *cells) {
    const Cell *seq = &cells[F_SEQ], *row_prev = &cells[F_PREV_HASH], *stored = &cells[F_HASH];
    if (seq->kind != CELL_INT || seq->integer != w->expected) return 0;
    if (stored->kind != CELL_TEXT || stored->len != 64) return 0;
    if (w->have_prev
        && (w->have_prev < 0 || row_prev->kind != CELL_TEXT || row_prev->len != 64
            || memcmp(row_prev->text, w->prev, 64) != 0))
        return 0;
    int built = row_text(&w->text, cells, w->mode, w->details, w->make_detail, &w->memo);
    if (built != 1) return built;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (!EVP_DigestInit_ex(w->hash, SHA256_MD, NULL) || !EVP_DigestUpdate(w->hash, w->text.data, w->text.len)
        || !EVP_DigestFinal_ex(w->hash, digest, &size) || size != 32)
        return -2;
    for (int i = 0; i < 32; i++)
        if (stored->text[2 * i] != HEX[digest[i] >> 4] || stored->text[2 * i + 1] != HEX[digest[i] & 15])
            return 0;
    memcpy(w->prev, stored->text, 64);
    w->have_prev = 1;
    w->expected++;
    return 1;
}

static PyObject *walk_failed(int code) {
    if (code == -1) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
    } else {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
    }
    return NULL;
}

/* The hash the next row must link to, after the rows vouched for (a new reference): the last one's, else
 * the `prev` the walk began with. */
static PyObject *walk_prev(const Walk *w, PyObject *prev) {
    if (w->have_prev == 1) return PyUnicode_FromStringAndSize(w->prev, 64);
    return Py_NewRef(prev);
}

/* What a reader's vouch() returns, (expected, prev, more), or NULL with the walk's error set. */
static PyObject *reader_result(const Walk *w, PyObject *prev, int done, int more) {
    if (done < 0) return walk_failed(done);
    return Py_BuildValue("LNO", w->expected, walk_prev(w, prev), more ? Py_True : Py_False);
}

static int check_mode(int mode) {
    if (mode == INSTANT_SQLITE || mode == INSTANT_FORMATTED) return 1;
    PyErr_SetString(PyExc_ValueError, "unknown instant mode");
    return 0;
}

PyDoc_STRVAR(check_rows_doc,
"check_rows(rows, start, expected, prev, details, make_detail, mode) -> (index, expected, prev)\n\n"
"Vouch for rows[start:] (a list of tuples) in order while each is a common row that hashes right, has seq\n"
"`expected` and links to `prev` (None: no link checked for the first). Returns the index of the first row\n"
"not vouched for (len(rows) if none) with `expected` and `prev` after the rows vouched for.");

static PyObject *check_rows(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *rows, *prev, *details, *make_detail;
    Py_ssize_t start;
    long long expected;
    int mode;
    if (!PyArg_ParseTuple(args, "O!nLOO!Oi:check_rows", &PyList_Type, &rows, &start, &expected, &prev,
                          &PyDict_Type, &details, &make_detail, &mode)
        || !check_mode(mode))
        return NULL;
    Walk w;
    if (walk_open(&w, expected, prev, mode, details, make_detail) < 0) {
        walk_close(&w);
        return walk_failed(-1);
    }
    Py_ssize_t i = start < 0 ? 0 : start;
    int done = 1;
    /* The list may change while make_detail runs Python code: its size is read again for every row, and
     * the row is held. */
    for (; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) < N_FIELDS) break;
        Py_INCREF(row);
        Cell cells[N_FIELDS];
        for (int f = 0; f < N_FIELDS; f++) cells[f] = cell_of_object(PyTuple_GET_ITEM(row, f));
        done = walk_row(&w, cells);
        Py_DECREF(row);
        if (done != 1) break;
    }
    PyObject *result = done < 0 ? walk_failed(done) : Py_BuildValue("nLN", i, w.expected, walk_prev(&w, prev));
    walk_close(&w);
    return result;
}

PyDoc_STRVAR(row_text_doc,
"row_text(row, details, make_detail, mode) -> bytes | None\n\n"
"The canonical text check_rows hashes for a row, or None where it would not vouch for the row (for tests).");

static PyObject *py_row_text(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *row, *details, *make_detail;
    int mode;
    if (!PyArg_ParseTuple(args, "O!O!Oi:row_text", &PyTuple_Type, &row, &PyDict_Type, &details, &make_detail,
                          &mode) || !check_mode(mode))
        return NULL;
    if (PyTuple_GET_SIZE(row) < N_FIELDS) Py_RETURN_NONE;
    Cell cells[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) cells[f] = cell_of_object(PyTuple_GET_ITEM(row, f));
    Buffer b = {PyMem_Malloc(2048), 0, 2048};
    if (b.data == NULL) return PyErr_NoMemory();
    int built = row_text(&b, cells, mode, details, make_detail, NULL);
    PyObject *result = built < 0 ? PyErr_NoMemory()
                       : built == 0 ? Py_NewRef(Py_None)
                                    : PyBytes_FromStringAndSize(b.data, (Py_ssize_t)b.len);
    PyMem_Free(b.data);
    return result;
}

static PyObject *py_valid_utf8(PyObject *Py_UNUSED(module), PyObject *arg) {
    char *data;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &data, &n) < 0) return NULL;
    return PyBool_FromLong(valid_utf8((const unsigned char *)data, n));
}

/* --- SQLite, read directly ----------------------------------------------------------------------------- */

/* SQLite's functions, from the library Python's sqlite3 module is linked with (see the top). */
static struct {
    int ready;
    typeof(sqlite3_open_v2) *open_v2;
    typeof(sqlite3_close_v2) *close_v2;
    typeof(sqlite3_busy_timeout) *busy_timeout;
    typeof(sqlite3_prepare_v2) *prepare_v2;
    typeof(sqlite3_bind_int64) *bind_int64;
    typeof(sqlite3_step) *step;
    typeof(sqlite3_reset) *reset;
    typeof(sqlite3_finalize) *finalize;
    typeof(sqlite3_column_type) *column_type;
    typeof(sqlite3_column_int64) *column_int64;
    typeof(sqlite3_column_text) *column_text;
    typeof(sqlite3_column_bytes) *column_bytes;
} lib;

PyDoc_STRVAR(bind_sqlite_doc,
"bind_sqlite(module_file) -> bool\n\n"
"Look SQLite's functions up through the loaded extension module at module_file (sqlite3's _sqlite3), so\n"
"that SqliteReader uses the very library that module uses. False where it does not export them.");

static PyObject *bind_sqlite(PyObject *Py_UNUSED(module), PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s:bind_sqlite", &path)) return NULL;
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) Py_RETURN_FALSE;
#define FIND(field, name) lib.field = (typeof(lib.field))dlsym(handle, name); ok = ok && lib.field != NULL
    int ok = 1;
    FIND(open_v2, "sqlite3_open_v2");
    FIND(close_v2, "sqlite3_close_v2");
    FIND(busy_timeout, "sqlite3_busy_timeout");
    FIND(prepare_v2, "sqlite3_prepare_v2");
    FIND(bind_int64, "sqlite3_bind_int64");
    FIND(step, "sqlite3_step");
    FIND(reset, "sqlite3_reset");
    FIND(finalize, "sqlite3_finalize");
    FIND(column_type, "sqlite3_column_type");
    FIND(column_int64, "sqlite3_column_int64");
    FIND(column_text, "sqlite3_column_text");
    FIND(column_bytes, "sqlite3_column_bytes");
#undef FIND
    dlclose(handle); /* the module stays loaded: it was loaded before, and RTLD_NOLOAD took a reference */
    lib.ready = ok;
    return PyBool_FromLong(ok);
}

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
    sqlite3_stmt *page;
    int rows_per_page;
} SqliteReader;

static void reader_close_db(SqliteReader *self) {
    if (self->page != NULL) lib.finalize(self->page);
    if (self->db != NULL) lib.close_v2(self->db);
    self->page = NULL;
    self->db = NULL;
}

static void reader_dealloc(SqliteReader *self) {
    reader_close_db(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* SqliteReader(path, sql, rows_per_page, busy_timeout_ms): a read-only connection to the database file and
 * the page query (parameters: after, to_seq, limit; columns in ROW_FIELDS order). */
static int reader_init(SqliteReader *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"path", "sql", "rows_per_page", "busy_timeout_ms", NULL};
    const char *path, *sql;
    int rows_per_page, busy_ms;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ssii:SqliteReader", keywords, &path, &sql, &rows_per_page,
                                     &busy_ms))
        return -1;
    if (!lib.ready) {
        PyErr_SetString(PyExc_RuntimeError, "bind_sqlite() has not found SQLite");
        return -1;
    }
    reader_close_db(self);
    self->rows_per_page = rows_per_page > 0 ? rows_per_page : 1;
    if (lib.open_v2(path, &self->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK
        || lib.busy_timeout(self->db, busy_ms) != SQLITE_OK
        || lib.prepare_v2(self->db, sql, -1, &self->page, NULL) != SQLITE_OK) {
        reader_close_db(self);
        PyErr_Format(PyExc_OSError, "cannot read the SQLite database %s", path);
        return -1;
    }
    return 0;
}

/* A column as a cell. Text that is not valid UTF-8 becomes OTHER: not vouched for. */
static Cell column_cell(sqlite3_stmt *stmt, int column) {
    Cell cell = {CELL_OTHER, 0, NULL, 0, NULL};
    switch (lib.column_type(stmt, column)) {
    case SQLITE_NULL: cell.kind = CELL_NULL; break;
    case SQLITE_INTEGER:
        cell.kind = CELL_INT;
        cell.integer = lib.column_int64(stmt, column);
        break;
    case SQLITE_TEXT:
        cell.text = (const char *)lib.column_text(stmt, column);
        cell.len = lib.column_bytes(stmt, column);
        if (cell.text != NULL && valid_utf8((const unsigned char *)cell.text, cell.len)) cell.kind = CELL_TEXT;
        break;
    default: break;
    }
    return cell;
}

PyDoc_STRVAR(reader_vouch_doc,
"vouch(to_seq, expected, prev, details, make_detail) -> (expected, prev, more)\n\n"
"Read rows with expected - 1 < seq <= to_seq in seq order, a page per query, and vouch for each in turn.\n"
"Returns the state after the rows vouched for and whether it stopped before a row it did not vouch for\n"
"(more=True: that row, seq > expected - 1, is for Python to decide; a database error stops it the same\n"
"way, so that Python's own read meets it and reports it).");

static PyObject *reader_vouch(SqliteReader *self, PyObject *args) {
    long long to_seq, expected;
    PyObject *prev, *details, *make_detail;
    if (!PyArg_ParseTuple(args, "LLOO!O:vouch", &to_seq, &expected, &prev, &PyDict_Type, &details,
                          &make_detail))
        return NULL;
    if (self->db == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is closed");
        return NULL;
    }
    Walk w;
    if (walk_open(&w, expected, prev, INSTANT_SQLITE, details, make_detail) < 0) {
        walk_close(&w);
        return walk_failed(-1);
    }
    int done = 1, more = 0;
    while (done == 1 && !more && w.expected - 1 < to_seq) {
        sqlite3_stmt *stmt = self->page;
        if (lib.bind_int64(stmt, 1, w.expected - 1) != SQLITE_OK || lib.bind_int64(stmt, 2, to_seq) != SQLITE_OK
            || lib.bind_int64(stmt, 3, self->rows_per_page) != SQLITE_OK) {
            more = 1;
            break;
        }
        int rows = 0, status;
        while ((status = lib.step(stmt)) == SQLITE_ROW) {
            rows++;
            Cell cells[N_FIELDS];
            for (int f = 0; f < N_FIELDS; f++) cells[f] = column_cell(stmt, f);
            done = walk_row(&w, cells);
            if (done != 1) {
                more = done == 0;
                break;
            }
        }
        if (status != SQLITE_ROW && status != SQLITE_DONE) more = 1;
        lib.reset(stmt); /* ends the read: no snapshot is held between pages */
        if (rows < self->rows_per_page && status == SQLITE_DONE) break;
    }
    PyObject *result = reader_result(&w, prev, done, more);
    walk_close(&w);
    return result;
}

static PyObject *reader_close(SqliteReader *self, PyObject *Py_UNUSED(ignored)) {
    reader_close_db(self);
    Py_RETURN_NONE;
}

static PyMethodDef reader_methods[] = {
    {"vouch", (PyCFunction)reader_vouch, METH_VARARGS, reader_vouch_doc},
    {"close", (PyCFunction)reader_close, METH_NOARGS, "Close the connection."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SqliteReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "app.audit._rowhash.SqliteReader",
    .tp_basicsize = sizeof(SqliteReader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Audit rows read and vouched for straight from a SQLite file (see the module's comment).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_methods = reader_methods,
};

/* --- PostgreSQL, read directly ------------------------------------------------------------------------- */

/* libpq's types and the functions used, declared here rather than taken from libpq-fe.h (which would make
 * libpq's headers a build dependency): these are its stable C ABI. The functions are looked up in the
 * libpq psycopg has loaded (bind_libpq), since a PGconn can only be used by the library that made it. */
typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
typedef unsigned int Oid;
enum { PGRES_TUPLES_OK = 2, PGRES_TUPLES_CHUNK = 12, PG_DIAG_SQLSTATE = 'C', PG_DIAG_MESSAGE_PRIMARY = 'M' };
/* Rows per result in chunked mode (libpq 17 on): ~70 KB, so that the memory of each result is reused by the
 * next one. A page as one result (3.5 MB) was handed back to the kernel and faulted in again every page,
 * which cost a tenth of the reader's time. */
enum { PG_CHUNK_ROWS = 100 };
enum { OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_TEXT = 25, OID_JSON = 114, OID_VARCHAR = 1043,
       OID_TIMESTAMPTZ = 1184 };

static struct {
    int ready;
    int (*send_query_params)(PGconn *, const char *, int, const Oid *, const char *const *, const int *,
                             const int *, int);
    int (*set_chunked_rows_mode)(PGconn *, int); /* NULL before libpq 17: results come whole */
    PGresult *(*get_result)(PGconn *);
    int (*result_status)(const PGresult *);
    int (*ntuples)(const PGresult *);
    int (*nfields)(const PGresult *);
    Oid (*ftype)(const PGresult *, int);
    int (*fformat)(const PGresult *, int);
    char *(*getvalue)(const PGresult *, int, int);
    int (*getlength)(const PGresult *, int, int);
    int (*getisnull)(const PGresult *, int, int);
    char *(*error_field)(const PGresult *, int);
    char *(*error_message)(const PGresult *);
    char *(*conn_error_message)(const PGconn *);
    void (*clear)(PGresult *);
} pq;

PyDoc_STRVAR(bind_libpq_doc,
"bind_libpq(library_file) -> bool\n\n"
"Look libpq's functions up through the loaded object at library_file (psycopg's own libpq, or its\n"
"extension module linked with it), so that PgReader uses the very library psycopg's connections are made\n"
"by. False where it does not export them or is not loaded.");

static PyObject *bind_libpq(PyObject *Py_UNUSED(module), PyObject *args) {
    const char *path;
    if (!PyArg_ParseTuple(args, "s:bind_libpq", &path)) return NULL;
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (handle == NULL) Py_RETURN_FALSE;
#define FIND(field, name) pq.field = (typeof(pq.field))dlsym(handle, name); ok = ok && pq.field != NULL
    int ok = 1;
    FIND(send_query_params, "PQsendQueryParams");
    FIND(get_result, "PQgetResult");
    FIND(result_status, "PQresultStatus");
    FIND(ntuples, "PQntuples");
    FIND(nfields, "PQnfields");
    FIND(ftype, "PQftype");
    FIND(fformat, "PQfformat");
    FIND(getvalue, "PQgetvalue");
    FIND(getlength, "PQgetlength");
    FIND(getisnull, "PQgetisnull");
    FIND(error_field, "PQresultErrorField");
    FIND(error_message, "PQresultErrorMessage");
    FIND(conn_error_message, "PQerrorMessage");
    FIND(clear, "PQclear");
#undef FIND
    pq.set_chunked_rows_mode = (typeof(pq.set_chunked_rows_mode))dlsym(handle, "PQsetChunkedRowsMode");
    dlclose(handle);
    pq.ready = ok;
    return PyBool_FromLong(ok);
}

/* How a result column is read: the binary forms of the types the audit table uses; any other type or a
 * text-format column gives cells that are not vouched for. */
typedef enum { COL_OTHER, COL_INT8, COL_INT4, COL_INT2, COL_TEXT, COL_TIMESTAMPTZ } ColumnKind;

static ColumnKind column_kind(const PGresult *result, int column) {
    if (pq.fformat(result, column) != 1) return COL_OTHER;
    switch (pq.ftype(result, column)) {
    case OID_INT8: return COL_INT8;
    case OID_INT4: return COL_INT4;
    case OID_INT2: return COL_INT2;
    case OID_TEXT: case OID_VARCHAR: return COL_TEXT;
    case OID_JSON: return COL_TEXT; /* binary json is its text, as stored (not jsonb, whose form differs) */
    case OID_TIMESTAMPTZ: return COL_TIMESTAMPTZ;
    default: return COL_OTHER;
    }
}

static uint64_t big_endian(const unsigned char *s, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | s[i];
    return v;
}

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's civil-day algorithms). */
static long long days_from_civil(long long y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static void civil_from_days(long long z, long long *y, int *m, int *d) {
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

#define MICROS_PER_DAY 86400000000LL
#define PG_EPOCH_DAYS 10957 /* 2000-01-01, where PostgreSQL counts timestamps from, in days since 1970 */

/* The instants the rows' query formats (rowcheck._POSTGRES_COLUMNS), as PostgreSQL's microseconds: from
 * 1000-01-02 up to, not including, 9999-12-30. Any other is not vouched for (Python's query reads NULL). */
static long long INSTANT_LOW, INSTANT_HIGH;

/* A timestamptz (binary: microseconds since 2000-01-01 UTC) as the API prints it, "YYYY-MM-DDTHH:MM:SS.
 * ffffffZ" (27 characters into out), or 0 outside the range above. */
static int format_instant(long long micros, char out[27]) {
    if (micros < INSTANT_LOW || micros >= INSTANT_HIGH) return 0;
    long long days = micros / MICROS_PER_DAY, rest = micros % MICROS_PER_DAY;
    if (rest < 0) {
        rest += MICROS_PER_DAY;
        days--;
    }
    long long year;
    int month, day;
    civil_from_days(days + PG_EPOCH_DAYS, &year, &month, &day);
    long long seconds = rest / 1000000;
    int fields[] = {(int)year, month, day, (int)(seconds / 3600), (int)(seconds / 60 % 60), (int)(seconds % 60),
                    (int)(rest % 1000000)};
    static const struct { int at, width; } place[] = {{0, 4}, {5, 2}, {8, 2}, {11, 2}, {14, 2}, {17, 2}, {20, 6}};
    memcpy(out, "0000-00-00T00:00:00.000000Z", 27);
    for (int f = 0; f < 7; f++)
        for (int i = place[f].at + place[f].width - 1, v = fields[f]; i >= place[f].at; i--, v /= 10)
            out[i] = (char)('0' + v % 10);
    return 1;
}

/* A value of a binary result as a cell (instants into `instant`, which the cell then points at). */
static Cell result_cell(const PGresult *result, int row, int column, ColumnKind kind, char instant[27]) {
    Cell cell = {CELL_OTHER, 0, NULL, 0, NULL};
    if (pq.getisnull(result, row, column)) {
        cell.kind = CELL_NULL;
        return cell;
    }
    const unsigned char *s = (const unsigned char *)pq.getvalue(result, row, column);
    int n = pq.getlength(result, row, column);
    switch (kind) {
    case COL_INT8:
        if (n == 8) cell.kind = CELL_INT, cell.integer = (long long)big_endian(s, 8);
        break;
    case COL_INT4:
        if (n == 4) cell.kind = CELL_INT, cell.integer = (int32_t)big_endian(s, 4);
        break;
    case COL_INT2:
        if (n == 2) cell.kind = CELL_INT, cell.integer = (int16_t)big_endian(s, 2);
        break;
    case COL_TEXT:
        if (valid_utf8(s, n)) cell.kind = CELL_TEXT, cell.text = (const char *)s, cell.len = n;
        break;
    case COL_TIMESTAMPTZ:
        if (n == 8 && format_instant((long long)big_endian(s, 8), instant))
            cell.kind = CELL_TEXT, cell.text = instant, cell.len = 27;
        break;
    default: break;
    }
    return cell;
}

static PyObject *PgReaderError;

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* the Python object that keeps the connection open */
    PGconn *conn;
    char *sql;
    int rows_per_page;
} PgReader;

static void pg_reader_dealloc(PgReader *self) {
    Py_XDECREF(self->owner);
    PyMem_Free(self->sql);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* PgReader(owner, pgconn_ptr, sql, rows_per_page): reads through the open connection at pgconn_ptr (psycopg's
 * PGconn.pgconn_ptr; `owner`, its psycopg object, is held so it cannot be freed first), in its transaction,
 * the page query (parameters: after, to_seq, limit; columns in ROW_FIELDS order), results in binary. */
static int pg_reader_init(PgReader *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"owner", "pgconn_ptr", "sql", "rows_per_page", NULL};
    PyObject *owner;
    unsigned long long address;
    const char *sql;
    int rows_per_page;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OKsi:PgReader", keywords, &owner, &address, &sql,
                                     &rows_per_page))
        return -1;
    if (!pq.ready) {
        PyErr_SetString(PyExc_RuntimeError, "bind_libpq() has not found libpq");
        return -1;
    }
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "no connection");
        return -1;
    }
    size_t n = strlen(sql) + 1;
    char *copy = PyMem_Malloc(n);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, sql, n);
    PyMem_Free(self->sql);
    Py_XSETREF(self->owner, Py_NewRef(owner));
    self->sql = copy;
    self->conn = (PGconn *)(uintptr_t)address;
    self->rows_per_page = rows_per_page > 0 ? rows_per_page : 1;
    return 0;
}

/* The server's error as PgReaderError(sqlstate or None, message), for Python to raise as its driver would. */
static void pg_error(const PGconn *conn, const PGresult *result) {
    const char *state = result == NULL ? NULL : pq.error_field(result, PG_DIAG_SQLSTATE);
    const char *message = result == NULL ? NULL : pq.error_field(result, PG_DIAG_MESSAGE_PRIMARY);
    if (message == NULL) message = result == NULL ? pq.conn_error_message(conn) : pq.error_message(result);
    PyObject *error = Py_BuildValue("(zs)", state, message == NULL ? "" : message);
    if (error == NULL) {
        PyErr_Clear();
        error = Py_BuildValue("(zs)", state, "(the server's message is not UTF-8)");
    }
    if (error != NULL) {
        PyErr_SetObject(PgReaderError, error);
        Py_DECREF(error);
    }
}

PyDoc_STRVAR(pg_reader_vouch_doc,
"vouch(to_seq, expected, prev, details, make_detail) -> (expected, prev, more)\n\n"
"As SqliteReader.vouch, through the PostgreSQL connection; a query that fails raises PgReaderError\n"
"(sqlstate, message): the transaction is then aborted, as it would be had the driver run the query.");

static PyObject *pg_reader_vouch(PgReader *self, PyObject *args) {
    long long to_seq, expected;
    PyObject *prev, *details, *make_detail;
    if (!PyArg_ParseTuple(args, "LLOO!O:vouch", &to_seq, &expected, &prev, &PyDict_Type, &details,
                          &make_detail))
        return NULL;
    if (self->conn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is closed");
        return NULL;
    }
    Walk w;
    if (walk_open(&w, expected, prev, INSTANT_FORMATTED, details, make_detail) < 0) {
        walk_close(&w);
        return walk_failed(-1);
    }
    PyObject *owner = Py_NewRef(self->owner); /* the connection stays open while the GIL is released */
    PGconn *conn = self->conn;
    int done = 1, more = 0, failed = 0;
    while (done == 1 && !more && w.expected - 1 < to_seq) {
        char after[24], last[24], limit[24];
        snprintf(after, sizeof after, "%lld", w.expected - 1);
        snprintf(last, sizeof last, "%lld", to_seq);
        snprintf(limit, sizeof limit, "%d", self->rows_per_page);
        const char *const values[] = {after, last, limit};
        int sent;
        Py_BEGIN_ALLOW_THREADS
        sent = pq.send_query_params(conn, self->sql, 3, NULL, values, NULL, NULL, 1);
        Py_END_ALLOW_THREADS
        if (!sent) {
            pg_error(conn, NULL);
            failed = 1;
            break;
        }
        if (pq.set_chunked_rows_mode != NULL) pq.set_chunked_rows_mode(conn, PG_CHUNK_ROWS);
        /* Every result of the query is taken, even after a stop or an error, so that the connection is left
         * idle for psycopg. */
        int rows = 0;
        for (;;) {
            PGresult *result;
            Py_BEGIN_ALLOW_THREADS
            result = pq.get_result(conn);
            Py_END_ALLOW_THREADS
            if (result == NULL) break;
            int status = pq.result_status(result);
            if (status != PGRES_TUPLES_OK && status != PGRES_TUPLES_CHUNK) {
                if (!failed) pg_error(conn, result);
                failed = 1;
            } else if (!failed && done == 1 && !more) {
                if (pq.nfields(result) < N_FIELDS) {
                    PyErr_Format(PyExc_RuntimeError, "the page query returned %d columns", pq.nfields(result));
                    failed = 1;
                } else {
                    ColumnKind kinds[N_FIELDS];
                    for (int f = 0; f < N_FIELDS; f++) kinds[f] = column_kind(result, f);
                    int n = pq.ntuples(result);
                    for (int r = 0; r < n; r++) {
                        Cell cells[N_FIELDS];
                        char instant[27];
                        for (int f = 0; f < N_FIELDS; f++) cells[f] = result_cell(result, r, f, kinds[f], instant);
                        done = walk_row(&w, cells);
                        if (done != 1) {
                            more = done == 0;
                            break;
                        }
                        rows++;
                    }
                }
            }
            pq.clear(result);
        }
        if (failed || rows < self->rows_per_page) break;
    }
    PyObject *out = failed ? NULL
                    : reader_result(&w, prev, done, more);
    walk_close(&w);
    Py_DECREF(owner);
    return out;
}

static PyObject *pg_reader_close(PgReader *self, PyObject *Py_UNUSED(ignored)) {
    self->conn = NULL;
    Py_CLEAR(self->owner);
    Py_RETURN_NONE;
}

static PyMethodDef pg_reader_methods[] = {
    {"vouch", (PyCFunction)pg_reader_vouch, METH_VARARGS, pg_reader_vouch_doc},
    {"close", (PyCFunction)pg_reader_close, METH_NOARGS, "Stop using the connection (it stays open)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PgReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "app.audit._rowhash.PgReader",
    .tp_basicsize = sizeof(PgReader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Audit rows read and vouched for through psycopg's libpq connection (see the module's comment).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)pg_reader_init,
    .tp_dealloc = (destructor)pg_reader_dealloc,
    .tp_methods = pg_reader_methods,
};

/* --- the module ---------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"check_rows", check_rows, METH_VARARGS, check_rows_doc},
    {"row_text", py_row_text, METH_VARARGS, row_text_doc},
    {"bind_sqlite", bind_sqlite, METH_VARARGS, bind_sqlite_doc},
    {"bind_libpq", bind_libpq, METH_VARARGS, bind_libpq_doc},
    {"valid_utf8", py_valid_utf8, METH_O, "Whether bytes are UTF-8 Python decodes (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "app.audit._rowhash",
    "The common case of app/audit/rowcheck.py's row check, compiled (see _rowhash.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rowhash(void) {
    if (SHA256_MD == NULL) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        /* Fetched once: with EVP_sha256() OpenSSL 3 looks the implementation up again on every digest. */
        SHA256_MD = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
        SHA256_MD = (EVP_MD *)EVP_sha256();
#endif
    }
    if (SHA256_MD == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    INSTANT_LOW = (days_from_civil(1000, 1, 2) - PG_EPOCH_DAYS) * MICROS_PER_DAY;
    INSTANT_HIGH = (days_from_civil(9999, 12, 30) - PG_EPOCH_DAYS) * MICROS_PER_DAY;
    if (PyType_Ready(&SqliteReaderType) < 0 || PyType_Ready(&PgReaderType) < 0) return NULL;
    if (PgReaderError == NULL) {
        PgReaderError = PyErr_NewExceptionWithDoc(
            "app.audit._rowhash.PgReaderError", "A PgReader query failed: args are (sqlstate or None, message).",
            NULL, NULL);
        if (PgReaderError == NULL) return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "INSTANT_SQLITE", INSTANT_SQLITE)
        || PyModule_AddIntConstant(m, "INSTANT_FORMATTED", INSTANT_FORMATTED)
        || PyModule_AddObjectRef(m, "SqliteReader", (PyObject *)&SqliteReaderType)
        || PyModule_AddObjectRef(m, "PgReader", (PyObject *)&PgReaderType)
        || PyModule_AddObjectRef(m, "PgReaderError", PgReaderError)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
