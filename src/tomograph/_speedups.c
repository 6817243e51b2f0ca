/* The span hot path in C: make_span, Span.__enter__, Span.__exit__ and Span.finish(); and,
 * in the second part of this file, the W3C, baggage and B3 header functions.
 *
 * Optional: tomograph/span.py keeps the same functions in Python, uses them when this module
 * is missing or TOMOGRAPH_NO_EXTENSIONS is set, and hands them to setup() so that anything
 * this file does not handle itself (a subclass of Span, a kind given as text, tags that are
 * not a plain dict, a timestamp, arguments that do not fit) goes to them: the Python code
 * stays the one definition of the behaviour, and this file a shortcut through its common
 * cases. Span stays the Python class it is: its fields are the member slots of that class,
 * read and written here at the offsets Python itself uses for them.
 *
 * Per span this saves the interpreter frames of make_span, __enter__ and __exit__: an
 * unsampled span costs about half the instructions of the Python version.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* The fields of Span, in the order of the names below. */
enum {
    F_CLASSIC,
    F_TOKEN,
    F_TRACER,
    F_DEBUG,
    F_END_NS,
    F_EPOCH_OFFSET_NS,
    F_ERROR,
    F_EXTRA,
    F_KIND,
    F_LOCAL_ENDPOINT,
    F_NAME,
    F_NOTES_RAW,
    F_PARENT_ID,
    F_REMOTE_ENDPOINT,
    F_SAMPLED,
    F_SHARED,
    F_SPAN_ID,
    F_START_NS,
    F_TAGS,
    F_TRACE_ID,
    SPAN_FIELDS
};

static const char *span_field_names[SPAN_FIELDS] = {
    "_classic", "_token",  "_tracer",    "debug",     "end_ns",
    "epoch_offset_ns", "error", "extra", "kind",      "local_endpoint",
    "name",     "notes_raw", "parent_id", "remote_endpoint", "sampled",
    "shared",   "span_id", "start_ns",   "tags",      "trace_id",
};

/* The fields of Tracer make_span reads. */
enum {
    T_LOCAL_ENDPOINT,
    T_TRACE_ID_BITS,
    T_ROOT_DECISION,
    T_SAMPLER,
    T_ROOT_FOLLOWS_PARENT,
    T_JOIN_SHARED_SPANS,
    T_REPORT,
    TRACER_FIELDS
};

static const char *tracer_field_names[TRACER_FIELDS] = {
    "local_endpoint",      "trace_id_bits",     "root_decision", "_sampler",
    "root_follows_parent", "join_shared_spans", "_report",
};

/* Enough for the fields of Span, of Tracer and of the clock's anchor. */
#define MAX_FIELDS ((int)SPAN_FIELDS)

typedef struct {
    PyTypeObject *type; /* NULL until setup */
    Py_ssize_t offset[MAX_FIELDS];
    PyObject *name[MAX_FIELDS];
} Layout;

_Static_assert(TRACER_FIELDS <= MAX_FIELDS, "Layout too small");

static Layout span_layout;
static Layout tracer_layout;

/* What setup() is given (strong references, kept for the life of the process). */
static PyObject *current_var;   /* CURRENT_SPAN */
static PyObject *root_extra_var; /* ROOT_EXTRA */
static PyObject *current_default; /* the CURRENT sentinel */
static PyObject *span_kind_type;
static PyObject *server_kind;   /* SpanKind.SERVER */
static PyObject *monotonic_ns;
static PyObject *getrandbits;
static PyObject *new_trace_id;
static PyObject *new_span_id;
static PyObject *anchor;
static PyObject *no_tags;
static PyObject *py_make_span;
static PyObject *py_enter;
static PyObject *py_exit;
static PyObject *py_finish;
static PyObject *py_tag;
static PyObject *py_annotate;

static PyObject *int_zero, *int_untimed, *int_64, *mask_64;
static PyObject *str_stop, *str_record_exception, *str_next_check_ns, *str_offset_ns,
    *str_offset_at, *str_trace_id, *str_span_id, *str_parent_id, *str_sampled, *str_debug,
    *str_extra, *str_append;

/* -- fields ------------------------------------------------------------------------------ */

#define FIELD(obj, layout, i) (*(PyObject **)((char *)(obj) + (layout).offset[i]))

/* A new reference to field i, or NULL with the AttributeError Python raises for it. */
static inline PyObject *
get_field(PyObject *obj, Layout *layout, int i)
{
    PyObject *value = FIELD(obj, *layout, i);
    if (value != NULL) {
        return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, layout->name[i]);
}

/* A field of a tracer: at its offset for a Tracer, by attribute for anything else. */
static inline PyObject *
tracer_field(PyObject *tracer, int i)
{
    if (Py_TYPE(tracer) == tracer_layout.type) {
        return get_field(tracer, &tracer_layout, i);
    }
    return PyObject_GetAttr(tracer, tracer_layout.name[i]);
}

/* Set a field of a span: takes a new reference to value (and releases it on NULL). */
static inline int
set_field(PyObject *span, int i, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    PyObject **slot = &FIELD(span, span_layout, i);
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
    return 0;
}

static inline int
set_field_ref(PyObject *span, int i, PyObject *value)
{
    return set_field(span, i, Py_NewRef(value));
}

static int
read_layout(PyTypeObject *type, const char **names, int count, Layout *layout)
{
    for (int i = 0; i < count; i++) {
        PyObject *name = PyUnicode_InternFromString(names[i]);
        if (name == NULL) {
            return -1;
        }
        layout->name[i] = name;
        PyObject *descr = PyDict_GetItemWithError(type->tp_dict, name);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            }
            return -1;
        }
        if (!PyType_IsSubtype(type, ((PyMemberDescrObject *)descr)->d_common.d_type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is another class's slot", type->tp_name,
                         names[i]);
            return -1;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", type->tp_name,
                         names[i]);
            return -1;
        }
        layout->offset[i] = member->offset;
    }
    layout->type = (PyTypeObject *)Py_NewRef((PyObject *)type);
    return 0;
}

/* -- make_span --------------------------------------------------------------------------- */

static inline PyObject *
call0(PyObject *callable)
{
    return PyObject_Vectorcall(callable, NULL, 0, NULL);
}

static inline PyObject *
call1(PyObject *callable, PyObject *arg)
{
    PyObject *args[2] = {NULL, arg};
    return PyObject_Vectorcall(callable, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *
call2(PyObject *callable, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {NULL, a, b};
    return PyObject_Vectorcall(callable, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* ``random_call() or fallback(arg)``: a random id, never zero. */
static PyObject *
random_id(PyObject *bits, PyObject *fallback, PyObject *fallback_arg)
{
    PyObject *id = call1(getrandbits, bits);
    if (id == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(id);
    if (truth > 0) {
        return id;
    }
    Py_DECREF(id);
    if (truth < 0) {
        return NULL;
    }
    return fallback_arg ? call1(fallback, fallback_arg) : call0(fallback);
}

/* The fields of the clock's anchor (an EpochAnchor) the span reads. */
enum { A_NEXT_CHECK_NS, A_OFFSET_NS, ANCHOR_FIELDS };
static const char *anchor_field_names[ANCHOR_FIELDS] = {"next_check_ns", "offset_ns"};
static Layout anchor_layout;

static inline PyObject *
anchor_field(int i)
{
    if (Py_TYPE(anchor) == anchor_layout.type) {
        return get_field(anchor, &anchor_layout, i);
    }
    return PyObject_GetAttr(anchor, i == A_OFFSET_NS ? str_offset_ns : str_next_check_ns);
}

/* ``anchor.offset_ns if start < anchor.next_check_ns else anchor.offset_at(start)`` */
static PyObject *
epoch_offset(PyObject *start)
{
    PyObject *next_check = anchor_field(A_NEXT_CHECK_NS);
    if (next_check == NULL) {
        return NULL;
    }
    int before, overflow_start = 1, overflow_next = 1;
    long long start_ns = 0, next_ns = 0;
    if (PyLong_CheckExact(start) && PyLong_CheckExact(next_check)) {
        start_ns = PyLong_AsLongLongAndOverflow(start, &overflow_start);
        next_ns = PyLong_AsLongLongAndOverflow(next_check, &overflow_next);
    }
    if (overflow_start || overflow_next) {
        before = PyObject_RichCompareBool(start, next_check, Py_LT);
    }
    else {
        before = start_ns < next_ns;
    }
    Py_DECREF(next_check);
    if (before < 0) {
        return NULL;
    }
    if (before) {
        return anchor_field(A_OFFSET_NS);
    }
    return PyObject_CallMethodOneArg(anchor, str_offset_at, start);
}

/* The fields of a new span that starts a trace. */
static int
start_trace(PyObject *span, PyObject *tracer, PyObject *start, PyObject **sampled_out)
{
    PyObject *bits = tracer_field(tracer, T_TRACE_ID_BITS);
    if (bits == NULL) {
        return -1;
    }
    PyObject *trace_id = random_id(bits, new_trace_id, bits);
    Py_DECREF(bits);
    if (trace_id == NULL) {
        return -1;
    }
    set_field(span, F_TRACE_ID, trace_id);
    set_field_ref(span, F_PARENT_ID, Py_None);
    /* The low half of a fresh random trace id is itself random: one draw, not two. */
    PyObject *low = PyNumber_And(trace_id, mask_64);
    if (low == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(low);
    if (truth <= 0) {
        Py_DECREF(low);
        low = truth < 0 ? NULL : call0(new_span_id);
    }
    if (set_field(span, F_SPAN_ID, low) < 0) {
        return -1;
    }
    PyObject *sampled = tracer_field(tracer, T_ROOT_DECISION);
    if (sampled == NULL) {
        return -1;
    }
    if (sampled == Py_None) {
        Py_DECREF(sampled);
        PyObject *sampler = tracer_field(tracer, T_SAMPLER);
        if (sampler == NULL) {
            return -1;
        }
        sampled = call2(sampler, trace_id, Py_None);
        Py_DECREF(sampler);
        if (sampled == NULL) {
            return -1;
        }
    }
    set_field_ref(span, F_SAMPLED, sampled);
    *sampled_out = sampled;
    set_field_ref(span, F_DEBUG, Py_False);
    set_field_ref(span, F_SHARED, Py_False);
    PyObject *extra;
    if (PyContextVar_Get(root_extra_var, NULL, &extra) < 0 || set_field(span, F_EXTRA, extra) < 0) {
        return -1;
    }
    return set_field(span, F_EPOCH_OFFSET_NS, epoch_offset(start));
}

/* The fields of a new span whose parent is a Span of this process. */
static int
continue_local(PyObject *span, PyObject *parent, PyObject **sampled_out)
{
    if (set_field(span, F_TRACE_ID, get_field(parent, &span_layout, F_TRACE_ID)) < 0 ||
        set_field(span, F_PARENT_ID, get_field(parent, &span_layout, F_SPAN_ID)) < 0 ||
        set_field(span, F_SPAN_ID, random_id(int_64, new_span_id, NULL)) < 0) {
        return -1;
    }
    PyObject *sampled = get_field(parent, &span_layout, F_SAMPLED);
    if (set_field(span, F_SAMPLED, sampled) < 0) {
        return -1;
    }
    *sampled_out = Py_NewRef(sampled);
    if (set_field(span, F_DEBUG, get_field(parent, &span_layout, F_DEBUG)) < 0) {
        return -1;
    }
    set_field_ref(span, F_SHARED, Py_False);
    if (set_field(span, F_EXTRA, get_field(parent, &span_layout, F_EXTRA)) < 0) {
        return -1;
    }
    return set_field(span, F_EPOCH_OFFSET_NS, get_field(parent, &span_layout, F_EPOCH_OFFSET_NS));
}

/* The fields of a new span continuing a remote context (or anything else given as parent). */
static int
continue_remote(PyObject *span, PyObject *tracer, PyObject *remote, PyObject *start,
                PyObject **sampled_out)
{
    if (set_field(span, F_EPOCH_OFFSET_NS, epoch_offset(start)) < 0 ||
        set_field(span, F_TRACE_ID, PyObject_GetAttr(remote, str_trace_id)) < 0) {
        return -1;
    }
    PyObject *debug = PyObject_GetAttr(remote, str_debug);
    /* Our own reference: remote.extra runs Python code that may replace the span's slot. */
    Py_XINCREF(debug);
    if (set_field(span, F_DEBUG, debug) < 0 ||
        set_field(span, F_EXTRA, PyObject_GetAttr(remote, str_extra)) < 0) {
        Py_XDECREF(debug);
        return -1;
    }
    int truth = PyObject_IsTrue(debug);
    Py_DECREF(debug);
    PyObject *sampled = NULL;
    if (truth < 0) {
        return -1;
    }
    if (truth) {
        sampled = Py_NewRef(Py_True);
    }
    else {
        PyObject *remote_sampled = PyObject_GetAttr(remote, str_sampled);
        if (remote_sampled == NULL) {
            return -1;
        }
        int follow = 0;
        if (remote_sampled != Py_None) {
            PyObject *follows = tracer_field(tracer, T_ROOT_FOLLOWS_PARENT);
            follow = follows == NULL ? -1 : PyObject_IsTrue(follows);
            Py_XDECREF(follows);
        }
        if (follow < 0) {
            Py_DECREF(remote_sampled);
            return -1;
        }
        if (follow) {
            sampled = remote_sampled; /* what a parent-based sampler would answer */
        }
        else {
            Py_DECREF(remote_sampled);
            PyObject *sampler = tracer_field(tracer, T_SAMPLER);
            if (sampler == NULL) {
                return -1;
            }
            PyObject *trace_id = PyObject_GetAttr(remote, str_trace_id);
            if (trace_id != NULL) {
                sampled = call2(sampler, trace_id, remote);
            }
            Py_DECREF(sampler);
            Py_XDECREF(trace_id);
            if (sampled == NULL) {
                return -1;
            }
        }
    }
    set_field_ref(span, F_SAMPLED, sampled);
    *sampled_out = sampled;
    PyObject *join = tracer_field(tracer, T_JOIN_SHARED_SPANS);
    if (join == NULL) {
        return -1;
    }
    truth = PyObject_IsTrue(join);
    Py_DECREF(join);
    if (truth < 0) {
        return -1;
    }
    if (truth && FIELD(span, span_layout, F_KIND) == server_kind) {
        /* Zipkin's classic RPC model: the server reports under the client's span id. */
        if (set_field(span, F_SPAN_ID, PyObject_GetAttr(remote, str_span_id)) < 0 ||
            set_field(span, F_PARENT_ID, PyObject_GetAttr(remote, str_parent_id)) < 0) {
            return -1;
        }
        return set_field_ref(span, F_SHARED, Py_True);
    }
    if (set_field(span, F_SPAN_ID, random_id(int_64, new_span_id, NULL)) < 0 ||
        set_field(span, F_PARENT_ID, PyObject_GetAttr(remote, str_span_id)) < 0) {
        return -1;
    }
    return set_field_ref(span, F_SHARED, Py_False);
}

/* make_span for the arguments the fast path takes; the Python make_span for the rest. */
static PyObject *
make_span_from(PyObject *tracer, PyObject *name, PyObject *kind, PyObject *tags, PyObject *parent,
               PyObject *local, PyObject *remote)
{
    PyTypeObject *type = span_layout.type;
    PyObject *span = type->tp_alloc(type, 0);
    if (span == NULL) {
        return NULL;
    }
    PyObject *start = NULL, *sampled = NULL, *parent_ref = NULL;
    set_field_ref(span, F_TRACER, tracer);
    set_field_ref(span, F_NAME, name);
    set_field_ref(span, F_KIND, kind);
    int truth = PyObject_IsTrue(local);
    if (truth < 0) {
        goto error;
    }
    if (truth) {
        set_field_ref(span, F_LOCAL_ENDPOINT, local);
    }
    else if (set_field(span, F_LOCAL_ENDPOINT, tracer_field(tracer, T_LOCAL_ENDPOINT)) < 0) {
        goto error;
    }
    set_field_ref(span, F_REMOTE_ENDPOINT, remote);
    set_field_ref(span, F_END_NS, int_zero);
    set_field_ref(span, F_ERROR, Py_False);
    set_field_ref(span, F_CLASSIC, Py_False);
    set_field_ref(span, F_TOKEN, Py_None);
    start = call0(monotonic_ns);
    if (start == NULL) {
        goto error;
    }
    if (parent == current_default) {
        if (PyContextVar_Get(current_var, NULL, &parent_ref) < 0) {
            goto error;
        }
        parent = parent_ref;
    }
    int done;
    if (parent == Py_None) {
        done = start_trace(span, tracer, start, &sampled);
    }
    else if (Py_IS_TYPE(parent, span_layout.type)) {
        done = continue_local(span, parent, &sampled);
    }
    else {
        done = continue_remote(span, tracer, parent, start, &sampled);
    }
    if (done < 0) {
        goto error;
    }
    truth = PyObject_IsTrue(sampled);
    if (truth < 0) {
        goto error;
    }
    int has_tags = tags != Py_None && PyDict_GET_SIZE(tags) != 0;
    if (truth) {
        if (set_field(span, F_TAGS, has_tags ? PyDict_Copy(tags) : PyDict_New()) < 0 ||
            set_field(span, F_NOTES_RAW, PyList_New(0)) < 0) {
            goto error;
        }
    }
    else if (set_field(span, F_TAGS, has_tags ? PyDictProxy_New(tags) : Py_NewRef(no_tags)) < 0) {
        goto error;
    }
    set_field(span, F_START_NS, start);
    Py_XDECREF(sampled);
    Py_XDECREF(parent_ref);
    return span;

error:
    Py_XDECREF(start);
    Py_XDECREF(sampled);
    Py_XDECREF(parent_ref);
    Py_DECREF(span);
    return NULL;
}

static PyObject *make_span_keywords[6];

/* Parses make_span's arguments after the tracer; NULL (without an error) sends the call to the
 * Python make_span: a keyword it does not know, a missing name, too many arguments, a kind
 * given as text, tags that are not a plain dict. */
static PyObject *
make_span_call(PyObject *tracer, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *values[6] = {NULL, Py_None, Py_None, current_default, Py_None, Py_None};
    if (nargs > 6) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        values[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t count = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int found = -1;
            for (int i = 0; i < 6; i++) {
                if (key == make_span_keywords[i]) {
                    found = i;
                    break;
                }
            }
            if (found < nargs) { /* unknown (-1), or given twice */
                return NULL;
            }
            values[found] = args[nargs + k];
        }
    }
    PyObject *kind = values[1], *tags = values[2];
    if (values[0] == NULL || (kind != Py_None && Py_TYPE(kind) != (PyTypeObject *)span_kind_type) ||
        (tags != Py_None && !PyDict_CheckExact(tags))) {
        return NULL;
    }
    return make_span_from(tracer, values[0], kind, tags, values[3], values[4], values[5]);
}

/* Calls the Python version of a method with self in front of the arguments. */
static PyObject *
call_python(PyObject *function, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[9];
    PyObject **all = total < 8 ? small : PyMem_New(PyObject *, total + 1);
    if (all == NULL) {
        return PyErr_NoMemory();
    }
    all[0] = self;
    for (Py_ssize_t i = 0; i < total; i++) {
        all[i + 1] = args[i];
    }
    PyObject *result = PyObject_Vectorcall(function, all, nargs + 1, kwnames);
    if (all != small) {
        PyMem_Free(all);
    }
    return result;
}

/* make_span(tracer, name, ...) */
static PyObject *
make_span_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs >= 1) {
        PyObject *span = make_span_call(args[0], args + 1, nargs - 1, kwnames);
        if (span != NULL || PyErr_Occurred()) {
            return span;
        }
    }
    return PyObject_Vectorcall(py_make_span, args, nargs, kwnames);
}

/* Tracer.span: make_span with the tracer as self. */
static PyObject *
make_span_method(PyObject *tracer, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *span = make_span_call(tracer, args, nargs, kwnames);
    if (span != NULL || PyErr_Occurred()) {
        return span;
    }
    return call_python(py_make_span, tracer, args, nargs, kwnames);
}

/* -- enter, exit, finish ----------------------------------------------------------------- */

static PyObject *
span_enter(PyObject *self, PyObject *unused)
{
    if (!Py_IS_TYPE(self, span_layout.type)) {
        return call1(py_enter, self);
    }
    PyObject *token = PyContextVar_Set(current_var, self);
    if (token == NULL) {
        return NULL;
    }
    set_field(self, F_TOKEN, token);
    return Py_NewRef(self);
}

/* ``bool(span.<field i>)``: 1, 0, or -1 with the exception set. */
static inline int
span_truth(PyObject *span, int i)
{
    PyObject *value = get_field(span, &span_layout, i);
    if (value == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* finish() without a timestamp, once the span is known to be unfinished. */
static int
end_span(PyObject *self)
{
    int truth = span_truth(self, F_SAMPLED);
    if (truth <= 0) {
        return truth < 0 ? -1 : set_field_ref(self, F_END_NS, int_untimed);
    }
    PyObject *end_ns = call0(monotonic_ns);
    if (end_ns == NULL) {
        return -1;
    }
    set_field_ref(self, F_END_NS, end_ns);
    truth = span_truth(self, F_CLASSIC);
    if (truth > 0) {
        PyObject *notes = get_field(self, &span_layout, F_NOTES_RAW);
        PyObject *note = notes == NULL ? NULL : PyTuple_Pack(3, end_ns, str_stop, Py_None);
        PyObject *appended = note == NULL ? NULL : PyObject_CallMethodOneArg(notes, str_append, note);
        Py_XDECREF(notes);
        Py_XDECREF(note);
        truth = appended == NULL ? -1 : 0;
        Py_XDECREF(appended);
    }
    Py_DECREF(end_ns);
    if (truth < 0) {
        return -1;
    }
    PyObject *tracer = get_field(self, &span_layout, F_TRACER);
    if (tracer == NULL) {
        return -1;
    }
    PyObject *report = tracer_field(tracer, T_REPORT);
    Py_DECREF(tracer);
    if (report == NULL) {
        return -1;
    }
    PyObject *reported = call1(report, self);
    Py_DECREF(report);
    if (reported == NULL) {
        return -1;
    }
    Py_DECREF(reported);
    return 0;
}

/* ``if not self.end_ns: end_span(self)`` */
static int
end_unfinished(PyObject *self)
{
    int finished = span_truth(self, F_END_NS);
    if (finished) {
        return finished < 0 ? -1 : 0;
    }
    return end_span(self);
}

static PyObject *
span_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs != 3) {
        return call_python(py_exit, self, args, nargs, kwnames);
    }
    PyObject *exc = args[1];
    if (exc != Py_None) {
        PyObject *recorded = PyObject_CallMethodOneArg(self, str_record_exception, exc);
        if (recorded == NULL) {
            return NULL;
        }
        Py_DECREF(recorded);
    }
    PyObject *token = get_field(self, &span_layout, F_TOKEN);
    if (token == NULL) {
        return NULL;
    }
    if (token != Py_None) {
        set_field_ref(self, F_TOKEN, Py_None);
        int reset = PyContextVar_Reset(current_var, token);
        if (reset < 0) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                Py_DECREF(token);
                return NULL;
            }
            PyErr_Clear(); /* entered in another context: see Span.deactivate() */
        }
    }
    Py_DECREF(token);
    if (end_unfinished(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
span_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs > 1 ||
        (nargs == 1 && args[0] != Py_None)) {
        return call_python(py_finish, self, args, nargs, kwnames);
    }
    if (end_unfinished(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ``tag(key, value)``: ``if self.sampled: self.tags[key] = value`` */
static PyObject *
span_tag(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs != 2) {
        return call_python(py_tag, self, args, nargs, kwnames);
    }
    int truth = span_truth(self, F_SAMPLED);
    if (truth > 0) {
        PyObject *tags = get_field(self, &span_layout, F_TAGS);
        if (tags == NULL) {
            return NULL;
        }
        truth = PyObject_SetItem(tags, args[0], args[1]);
        Py_DECREF(tags);
    }
    if (truth < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ``annotate(value, duration_us=None)``: a note at the current time, if sampled */
static PyObject *
span_annotate(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs < 1 || nargs > 2) {
        return call_python(py_annotate, self, args, nargs, kwnames);
    }
    int truth = span_truth(self, F_SAMPLED);
    if (truth > 0) {
        PyObject *notes = get_field(self, &span_layout, F_NOTES_RAW);
        if (notes == NULL) {
            return NULL;
        }
        PyObject *now = call0(monotonic_ns);
        PyObject *note = now == NULL ? NULL : PyTuple_Pack(3, now, args[0], nargs == 2 ? args[1] : Py_None);
        Py_XDECREF(now);
        PyObject *appended = note == NULL ? NULL : PyObject_CallMethodOneArg(notes, str_append, note);
        Py_XDECREF(note);
        Py_DECREF(notes);
        truth = appended == NULL ? -1 : 0;
        Py_XDECREF(appended);
    }
    if (truth < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The interpreter setup() ran in: the only one the compiled functions serve. */
static PyInterpreterState *setup_interpreter = NULL;

/* -- setup ------------------------------------------------------------------------------- */

/* Each definition's doc starts with a text signature ("name(...)\n--\n\n"), which
 * inspect.signature() and help() read; setup() puts the Python function's docstring after it.
 * tomograph.CURRENT is the one default that is no literal (span.py: why it is a str). */
#define MAKE_SPAN_PARAMETERS \
    "name, kind=None, tags=None, parent=tomograph.CURRENT, local_endpoint=None, " \
    "remote_endpoint=None)\n--\n\n"

static PyMethodDef make_span_method_def = {
    "span", (PyCFunction)(void (*)(void))make_span_method, METH_FASTCALL | METH_KEYWORDS,
    "span($tracer, " MAKE_SPAN_PARAMETERS "Start a span of this tracer: see make_span."};

static PyMethodDef make_span_function_def = {
    "make_span", (PyCFunction)(void (*)(void))make_span_function, METH_FASTCALL | METH_KEYWORDS,
    "make_span(tracer, " MAKE_SPAN_PARAMETERS "Start a span of tracer (see tomograph.span.make_span)."};

static PyMethodDef span_method_defs[] = {
    {"__enter__", (PyCFunction)span_enter, METH_NOARGS,
     "__enter__($self)\n--\n\nMake the span current."},
    {"__exit__", (PyCFunction)(void (*)(void))span_exit, METH_FASTCALL | METH_KEYWORDS,
     "__exit__($self, exc_type, exc, tb)\n--\n\n"
     "Restore the previous current span and finish this one."},
    {"finish", (PyCFunction)(void (*)(void))span_finish, METH_FASTCALL | METH_KEYWORDS,
     "finish($self, timestamp_us=None)\n--\n\n"
     "Stop the clock and hand the span to the tracer's backends (if sampled)."},
    {"tag", (PyCFunction)(void (*)(void))span_tag, METH_FASTCALL | METH_KEYWORDS,
     "tag($self, key, value)\n--\n\nSet a tag."},
    {"annotate", (PyCFunction)(void (*)(void))span_annotate, METH_FASTCALL | METH_KEYWORDS,
     "annotate($self, value, duration_us=None)\n--\n\nAdd a timestamped note."},
};
#define SPAN_METHODS ((int)(sizeof(span_method_defs) / sizeof(span_method_defs[0])))

/* The definitions' docs with the Python functions' docstrings, shown by help() for the compiled
 * ones (kept alive here: the method definitions point into them). */
static PyObject *docs[SPAN_METHODS + 2];

/* The definition's text signature, then the Python function's docstring (kept in *slot). */
static void
copy_doc_to(PyMethodDef *def, PyObject *function, PyObject **slot)
{
    const char *end = strstr(def->ml_doc, "\n--\n\n");
    Py_ssize_t length = end == NULL ? 0 : end - def->ml_doc + 5;
    PyObject *doc = PyObject_GetAttrString(function, "__doc__");
    PyObject *signature = PyUnicode_FromStringAndSize(def->ml_doc, length);
    PyObject *joined = doc != NULL && signature != NULL && PyUnicode_Check(doc)
                           ? PyUnicode_Concat(signature, doc)
                           : NULL;
    Py_XDECREF(doc);
    Py_XDECREF(signature);
    const char *text = joined == NULL ? NULL : PyUnicode_AsUTF8(joined);
    if (text == NULL) {
        PyErr_Clear(); /* no docstring (python -OO): the definition's own stays */
        Py_XDECREF(joined);
        return;
    }
    Py_XSETREF(*slot, joined);
    def->ml_doc = text;
}

static void
copy_doc(PyMethodDef *def, PyObject *function, int i)
{
    copy_doc_to(def, function, &docs[i]);
}

#define KEEP(target, value) Py_XSETREF(target, Py_NewRef(value))

/* setup(Span, names): prepares the module and returns
 * (make_span, Tracer.span, Span.__enter__, Span.__exit__, Span.finish). */
static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *span_type, *names;
    if (span_layout.type != NULL) {
        /* The globals below belong to the first Span class and interpreter set up (the methods
         * installed there use them): a re-imported span module or a subinterpreter runs pure
         * Python instead (span.py catches this). */
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!:setup", &PyType_Type, &span_type, &PyDict_Type, &names)) {
        return NULL;
    }
    static const char *needed[] = {
        "CURRENT_SPAN", "ROOT_EXTRA", "CURRENT", "SpanKind", "SERVER", "monotonic_ns",
        "getrandbits", "new_trace_id", "new_span_id", "anchor", "no_tags", "make_span",
        "enter", "exit", "finish", "tag", "annotate"};
    PyObject **targets[] = {&current_var, &root_extra_var, &current_default, &span_kind_type,
                            &server_kind, &monotonic_ns, &getrandbits, &new_trace_id,
                            &new_span_id, &anchor, &no_tags, &py_make_span, &py_enter,
                            &py_exit, &py_finish, &py_tag, &py_annotate};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        PyObject *value = PyDict_GetItemString(names, needed[i]);
        if (value == NULL) {
            return PyErr_Format(PyExc_KeyError, "setup() needs %s", needed[i]);
        }
        KEEP(*targets[i], value);
    }
    if (!PyContextVar_CheckExact(current_var) || !PyContextVar_CheckExact(root_extra_var)) {
        PyErr_SetString(PyExc_TypeError, "CURRENT_SPAN and ROOT_EXTRA must be ContextVars");
        return NULL;
    }
    const char *keywords[6] = {"name", "kind", "tags", "parent", "local_endpoint",
                               "remote_endpoint"};
    for (int i = 0; i < 6; i++) {
        if ((make_span_keywords[i] = PyUnicode_InternFromString(keywords[i])) == NULL) {
            return NULL;
        }
    }
    if ((int_zero = PyLong_FromLong(0)) == NULL || (int_untimed = PyLong_FromLong(-1)) == NULL ||
        (int_64 = PyLong_FromLong(64)) == NULL ||
        (mask_64 = PyLong_FromUnsignedLongLong(0xFFFFFFFFFFFFFFFFULL)) == NULL ||
        (str_stop = PyUnicode_InternFromString("stop")) == NULL ||
        (str_record_exception = PyUnicode_InternFromString("record_exception")) == NULL ||
        (str_next_check_ns = PyUnicode_InternFromString("next_check_ns")) == NULL ||
        (str_offset_ns = PyUnicode_InternFromString("offset_ns")) == NULL ||
        (str_offset_at = PyUnicode_InternFromString("offset_at")) == NULL ||
        (str_trace_id = PyUnicode_InternFromString("trace_id")) == NULL ||
        (str_span_id = PyUnicode_InternFromString("span_id")) == NULL ||
        (str_parent_id = PyUnicode_InternFromString("parent_id")) == NULL ||
        (str_sampled = PyUnicode_InternFromString("sampled")) == NULL ||
        (str_debug = PyUnicode_InternFromString("debug")) == NULL ||
        (str_extra = PyUnicode_InternFromString("extra")) == NULL ||
        (str_append = PyUnicode_InternFromString("append")) == NULL) {
        return NULL;
    }
    for (int i = 0; i < TRACER_FIELDS; i++) {
        /* Read by attribute until use_tracer_layout() gives their offsets. */
        if ((tracer_layout.name[i] = PyUnicode_InternFromString(tracer_field_names[i])) == NULL) {
            return NULL;
        }
    }
    Layout span_fields = {0};
    if (read_layout((PyTypeObject *)span_type, span_field_names, SPAN_FIELDS, &span_fields) < 0) {
        return NULL;
    }
    /* make_span fills exactly these fields: a slot it does not know would stay unset. */
    PyObject *slots = PyObject_GetAttrString(span_type, "__slots__");
    Py_ssize_t count = slots == NULL ? -1 : PyObject_Length(slots);
    Py_XDECREF(slots);
    if (count < 0) {
        return NULL;
    }
    if (count != SPAN_FIELDS || ((PyTypeObject *)span_type)->tp_base != &PyBaseObject_Type) {
        return PyErr_Format(PyExc_TypeError, "%s has slots setup() does not know",
                            ((PyTypeObject *)span_type)->tp_name);
    }
    PyObject *python_methods[SPAN_METHODS] = {py_enter, py_exit, py_finish, py_tag, py_annotate};
    for (int i = 0; i < SPAN_METHODS; i++) {
        copy_doc(&span_method_defs[i], python_methods[i], i);
    }
    copy_doc(&make_span_function_def, py_make_span, SPAN_METHODS);
    copy_doc(&make_span_method_def, py_make_span, SPAN_METHODS + 1);
    PyObject *result = PyTuple_New(2 + SPAN_METHODS);
    if (result == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyCFunction_New(&make_span_function_def, NULL));
    /* Tracer.span binds like a method (tracer.span(...)): a method descriptor of object,
     * since make_span takes any tracer. */
    PyTuple_SET_ITEM(result, 1, PyDescr_NewMethod(&PyBaseObject_Type, &make_span_method_def));
    for (int i = 0; i < SPAN_METHODS; i++) {
        PyTuple_SET_ITEM(result, 2 + i,
                         PyDescr_NewMethod((PyTypeObject *)span_type, &span_method_defs[i]));
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(result); i++) {
        if (PyTuple_GET_ITEM(result, i) == NULL) {
            Py_DECREF(result);
            return NULL;
        }
    }
    Layout anchor_fields = {0};
    if (read_layout(Py_TYPE(anchor), anchor_field_names, ANCHOR_FIELDS, &anchor_fields) < 0) {
        PyErr_Clear(); /* not an EpochAnchor: its fields are read by attribute */
    }
    else {
        anchor_layout = anchor_fields;
    }
    span_layout = span_fields;
    setup_interpreter = PyInterpreterState_Get();
    return result;
}

/* use_tracer_layout(Tracer): read the fields of exactly that class at their offsets. */
static PyObject *
use_tracer_layout(PyObject *module, PyObject *tracer_type)
{
    if (!PyType_Check(tracer_type)) {
        PyErr_SetString(PyExc_TypeError, "use_tracer_layout() takes the Tracer class");
        return NULL;
    }
    if (span_layout.type == NULL || PyInterpreterState_Get() != setup_interpreter) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is not set up here");
        return NULL;
    }
    if (tracer_layout.type != NULL) {
        if (tracer_layout.type == (PyTypeObject *)tracer_type) {
            Py_RETURN_NONE;
        }
        /* make_span reads another Tracer class by attribute: never replace the offsets. */
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups uses another Tracer class");
        return NULL;
    }
    Layout fields = {0};
    if (read_layout((PyTypeObject *)tracer_type, tracer_field_names, TRACER_FIELDS, &fields) < 0) {
        return NULL;
    }
    tracer_layout = fields;
    Py_RETURN_NONE;
}

/* == Header formats: W3C traceparent/tracestate and B3, for dict carriers ================
 *
 * tomograph/propagation keeps every function here in Python too. The compiled ones handle the
 * common case themselves (a plain dict or WSGI environ whose values are ASCII strings, ids
 * well formed, caches warm) and hand every other call, unchanged, to the Python function: it
 * decides, logs and reads other carriers as before. A fast path answers only where the Python
 * one would give the same context without logging anything (property tests compare them). */

enum { C_TRACE_ID, C_SPAN_ID, C_PARENT_ID, C_SAMPLED, C_DEBUG, C_SHARED, C_EXTRA, CONTEXT_FIELDS };
static const char *context_field_names[CONTEXT_FIELDS] = {
    "trace_id", "span_id", "parent_id", "sampled", "debug", "shared", "extra"};
static Layout context_layout;
_Static_assert(CONTEXT_FIELDS <= MAX_FIELDS, "Layout too small");

/* "Not mine: the Python function decides": returned by the fast paths instead of a result. */
static PyObject not_handled_object;
#define NOT_HANDLED (&not_handled_object)
/* "The lookup raised": the exception is left set, for the caller to pass on. */
static PyObject raised_object;
#define RAISED (&raised_object)

static PyObject *py_new_context, *py_w3c_inject, *py_w3c_extract, *py_w3c_extract_dict,
    *py_b3_inject, *py_b3_extract, *py_b3_extract_dict;
/* w3c's caches (BoundedCache, a dict): formatted foreign members by the tuple of them, parsed
 * lists by their text, and parsed lists read behind our own member. */
static PyObject *foreign_cache, *parsed_cache, *after_ours_cache;
static PyObject *s_traceparent, *s_tracestate, *s_http_traceparent, *s_http_tracestate,
    *s_request_method, *s_wsgi_version, *s_one, *s_zero;
/* B3 names, in the order b3.py looks them up: single, trace id, span id, sampled, flags,
 * parent span id; then as WSGI environ keys. */
enum { B3_SINGLE, B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED, B3_FLAGS, B3_PARENT_ID, B3_NAMES };
static const char *b3_names[B3_NAMES] = {"b3",           "x-b3-traceid", "x-b3-spanid",
                                         "x-b3-sampled", "x-b3-flags",   "x-b3-parentspanid"};
static PyObject *b3_keys[B3_NAMES], *b3_environ_keys[B3_NAMES];
static const char *tracestate_names[1] = {"tracestate"};

static signed char hex_digit[256]; /* lower-case hex digit values; -1 for anything else */
static const char hex_chars[] = "0123456789abcdef";

#define OWN_PREFIX "tomograph="
#define OWN_PREFIX_LENGTH 10
/* The longest tracestate text w3c.py caches: longer lists are never in its caches. */
#define CACHED_LENGTH 1024
#define TRACEPARENT_00_LENGTH 55
#define B3_MAX_LENGTH 128

/* The ASCII text of an exact str, or NULL for anything else (the Python function decides). */
static inline const unsigned char *
ascii_of(PyObject *value, Py_ssize_t *length)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_COMPACT_ASCII(value)) {
        return NULL;
    }
    *length = PyUnicode_GET_LENGTH(value);
    return PyUnicode_1BYTE_DATA(value);
}

/* The value of n (at most 16) lower-case hex digits; -1 if one is not. */
static inline int
parse_hex(const unsigned char *text, Py_ssize_t n, uint64_t *out)
{
    uint64_t value = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int digit = hex_digit[text[i]];
        if (digit < 0) {
            return -1;
        }
        value = value << 4 | (uint64_t)digit;
    }
    *out = value;
    return 0;
}

/* An id of 16 or 32 hex digits, parsed: 0 and its halves, or -1 if it is not lower-case hex
 * or is zero (every format rejects an all-zero id). */
static inline int
parse_id(const unsigned char *text, Py_ssize_t n, uint64_t *high, uint64_t *low)
{
    *high = 0;
    if (n == 32) {
        if (parse_hex(text, 16, high) < 0) {
            return -1;
        }
        text += 16;
    }
    if (parse_hex(text, 16, low) < 0 || (*high == 0 && *low == 0)) {
        return -1;
    }
    return 0;
}

static PyObject *
int_of(uint64_t high, uint64_t low)
{
    if (high == 0) {
        return PyLong_FromUnsignedLongLong(low);
    }
#if PY_VERSION_HEX < 0x030D0000 && PYLONG_BITS_IN_DIGIT == 30
    /* The int's 30-bit digits written in place: _PyLong_FromByteArray reads 16 bytes one at
     * a time, about 450 instructions of a traced request's 3 us (every W3C trace id). 3.13 has
     * a public constructor for this instead. high != 0: three to five digits. */
    digit digits[5] = {
        (digit)(low & PyLong_MASK),
        (digit)(low >> 30 & PyLong_MASK),
        (digit)((low >> 60 | high << 4) & PyLong_MASK),
        (digit)(high >> 26 & PyLong_MASK),
        (digit)(high >> 56),
    };
    Py_ssize_t count = digits[4] ? 5 : digits[3] ? 4 : 3;
    PyLongObject *value = _PyLong_New(count);
    if (value == NULL) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    memcpy(value->long_value.ob_digit, digits, sizeof(digit) * (size_t)count);
#else
    memcpy(value->ob_digit, digits, sizeof(digit) * (size_t)count);
#endif
    return (PyObject *)value;
#else
    unsigned char bytes[16];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(high >> (56 - 8 * i));
        bytes[8 + i] = (unsigned char)(low >> (56 - 8 * i));
    }
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(bytes, 16, Py_ASNATIVEBYTES_BIG_ENDIAN);
#else
    return _PyLong_FromByteArray(bytes, 16, 0, 0);
#endif
#endif
}

/* The halves of an exact int from 0 to 2**128 - 1: 0, or -1 (no exception) for anything else
 * (a bool, a negative or larger int, another type: the Python function formats those). */
static int
halves_of(PyObject *value, uint64_t *high, uint64_t *low)
{
    if (!PyLong_CheckExact(value)) {
        return -1;
    }
    int overflow;
    long long small = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (!overflow) {
        if (small < 0) {
            PyErr_Clear(); /* (an exact int sets no error; a negative one is not an id) */
            return -1;
        }
        *high = 0;
        *low = (uint64_t)small;
        return 0;
    }
    if (overflow < 0) {
        return -1;
    }
    unsigned char bytes[16];
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t needed = PyLong_AsNativeBytes(
        value, bytes, 16,
        Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER |
            Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (needed < 0 || needed > 16) {
        PyErr_Clear();
        return -1;
    }
#else
    if (_PyLong_AsByteArray((PyLongObject *)value, bytes, 16, 0, 0) < 0) {
        PyErr_Clear(); /* over 128 bits */
        return -1;
    }
#endif
    uint64_t h = 0, l = 0;
    for (int i = 0; i < 8; i++) {
        h = h << 8 | bytes[i];
        l = l << 8 | bytes[8 + i];
    }
    *high = h;
    *low = l;
    return 0;
}

static inline void
write_hex(char *out, uint64_t value, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        out[i] = hex_chars[value & 15];
        value >>= 4;
    }
}

/* 32 hex digits of high and low, or 16 of low. */
static inline char *
write_id(char *out, uint64_t high, uint64_t low, int digits)
{
    if (digits == 32) {
        write_hex(out, high, 16);
        out += 16;
    }
    write_hex(out, low, 16);
    return out + 16;
}

static PyObject *
ascii_str(const char *text, Py_ssize_t length)
{
    PyObject *result = PyUnicode_New(length, 127);
    if (result != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(result), text, (size_t)length);
    }
    return result;
}

/* A new TraceContext, as new_context() makes it; takes the references to the three ids
 * (parent_id may be Py_None) and to extra (may be Py_None), released on failure too. */
static PyObject *
make_context(PyObject *trace_id, PyObject *span_id, PyObject *parent_id, PyObject *sampled,
             PyObject *debug, PyObject *extra)
{
    PyObject *context = NULL;
    if (trace_id != NULL && span_id != NULL && parent_id != NULL && extra != NULL) {
        PyTypeObject *type = context_layout.type;
        context = type->tp_alloc(type, 0);
    }
    if (context == NULL) {
        Py_XDECREF(trace_id);
        Py_XDECREF(span_id);
        Py_XDECREF(parent_id);
        Py_XDECREF(extra);
        return NULL;
    }
    FIELD(context, context_layout, C_TRACE_ID) = trace_id;
    FIELD(context, context_layout, C_SPAN_ID) = span_id;
    FIELD(context, context_layout, C_PARENT_ID) = parent_id;
    FIELD(context, context_layout, C_SAMPLED) = Py_NewRef(debug == Py_True ? Py_True : sampled);
    FIELD(context, context_layout, C_DEBUG) = Py_NewRef(debug);
    FIELD(context, context_layout, C_SHARED) = Py_NewRef(Py_False);
    FIELD(context, context_layout, C_EXTRA) = extra;
    return context;
}

/* Forward a call, as it came, to the Python function. An exception the compiled path met on
 * the way (a context's property getter, a tracestate member's __hash__) is cleared if it is an
 * Exception: the Python function runs that code again and decides, as it does alone, so such
 * code may run twice. Anything else (KeyboardInterrupt, SystemExit) goes to the caller. */
static inline PyObject *
forward(PyObject *function, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (PyErr_Occurred() != NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
    }
    return PyObject_Vectorcall(function, args, (size_t)nargs, kwnames);
}

/* new_context(trace_id, span_id, parent_id=None, sampled=None, debug=False, extra=None,
 * shared=False): positional calls with a bool debug here, anything else in Python. */
static PyObject *
new_context_compiled(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs < 2 || nargs > 7) {
        return forward(py_new_context, args, nargs, kwnames);
    }
    PyObject *debug = nargs > 4 ? args[4] : Py_False;
    PyObject *shared = nargs > 6 ? args[6] : Py_False;
    if (debug != Py_True && debug != Py_False) {
        return forward(py_new_context, args, nargs, kwnames);
    }
    PyObject *context = make_context(Py_NewRef(args[0]), Py_NewRef(args[1]),
                                     Py_NewRef(nargs > 2 ? args[2] : Py_None),
                                     nargs > 3 ? args[3] : Py_None, debug,
                                     Py_NewRef(nargs > 5 ? args[5] : Py_None));
    if (context != NULL && shared != Py_False) {
        Py_SETREF(FIELD(context, context_layout, C_SHARED), Py_NewRef(shared));
    }
    return context;
}

/* ``carrier.get(key)`` of a dict: a borrowed reference, NULL if absent; RAISED, with the
 * exception set, when the lookup raised (a key whose __eq__ fails). The readers pass that
 * exception on: the Python functions make the same lookups in the same order first, so they
 * would raise it at the same point, and a second run of that __eq__ could answer otherwise. */
static inline PyObject *
lookup(PyObject *carrier, PyObject *key)
{
    PyObject *value = PyDict_GetItemWithError(carrier, key);
    if (value == NULL && PyErr_Occurred()) {
        return RAISED;
    }
    return value;
}

/* carriers.has_other_case for names: 1 if a key spells one of them in another case or is not
 * a str, 0 if none does, -1 for a key only Python can lower-case (not ASCII). */
static int
other_case(PyObject *carrier, const char *const *names, int count)
{
    Py_ssize_t position = 0, length;
    PyObject *key, *value;
    while (PyDict_Next(carrier, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return 1;
        }
        const unsigned char *text = ascii_of(key, &length);
        if (text == NULL) {
            return -1;
        }
        for (int i = 0; i < count; i++) {
            const char *name = names[i];
            if ((Py_ssize_t)strlen(name) != length || memcmp(text, name, (size_t)length) == 0) {
                continue;
            }
            Py_ssize_t j = 0;
            while (j < length && Py_TOLOWER(text[j]) == (unsigned char)name[j]) {
                j++;
            }
            if (j == length) {
                return 1;
            }
        }
    }
    return 0;
}

/* A dict carrier's kind, as extract() tells it: 1 for a WSGI environ, 0 for plain headers,
 * -1 with the exception set when a lookup raised (as it does in the Python function). */
static int
environ_of(PyObject *carrier)
{
    int found = PyDict_Contains(carrier, s_request_method);
    if (found == 0) {
        found = PyDict_Contains(carrier, s_wsgi_version);
    }
    return found;
}

/* Parse arguments (carrier, environ[, exact]) of extract_dict: 0, or -1 to forward the call. */
static inline int
dict_arguments(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int *environ,
               int *exact)
{
    if (kwnames != NULL || nargs < 2 || nargs > 3 || !PyDict_CheckExact(args[0])) {
        return -1;
    }
    PyObject *exact_arg = nargs == 3 ? args[2] : Py_False;
    if ((args[1] != Py_True && args[1] != Py_False) ||
        (exact_arg != Py_True && exact_arg != Py_False)) {
        return -1;
    }
    *environ = args[1] == Py_True;
    *exact = exact_arg == Py_True;
    return 0;
}

/* A format's reader for the common cases of a dict carrier: its answer, or NOT_HANDLED; NULL
 * with the exception set where a lookup raised. */
typedef PyObject *(*FastRead)(PyObject *carrier, int environ, int exact);

/* extract_dict(carrier, environ[, exact]) by fast where it answers, else by python. */
static PyObject *
extract_dict_by(FastRead fast, PyObject *python, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    int environ, exact;
    if (dict_arguments(args, nargs, kwnames, &environ, &exact) == 0) {
        PyObject *answer = fast(args[0], environ, exact);
        if (answer != NOT_HANDLED) {
            return answer;
        }
    }
    return forward(python, args, nargs, kwnames);
}

/* extract(carrier) of a dict, plain headers or WSGI environ, by fast where it answers, else by
 * python. */
static PyObject *
extract_by(FastRead fast, PyObject *python, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    if (kwnames == NULL && nargs == 1 && PyDict_CheckExact(args[0])) {
        int environ = environ_of(args[0]);
        if (environ < 0) {
            return NULL;
        }
        PyObject *answer = fast(args[0], environ, 0);
        if (answer != NOT_HANDLED) {
            return answer;
        }
    }
    return forward(python, args, nargs, kwnames);
}

/* -- W3C ------------------------------------------------------------------------------- */

/* The key of a tracestate member is exactly "tomograph"? (members from w3c's caches) */
static inline int
is_own_member(PyObject *member)
{
    if (!PyTuple_CheckExact(member) || PyTuple_GET_SIZE(member) != 2) {
        return -1;
    }
    Py_ssize_t length;
    const unsigned char *key = ascii_of(PyTuple_GET_ITEM(member, 0), &length);
    if (key == NULL) {
        return -1;
    }
    return length == OWN_PREFIX_LENGTH - 1 && memcmp(key, OWN_PREFIX, OWN_PREFIX_LENGTH - 1) == 0;
}

static PyObject *w3c_with_state(PyObject *state, const unsigned char *parent_span_hex,
                                uint64_t trace_high, uint64_t trace_low, uint64_t span_id,
                                PyObject *sampled);
static PyObject *w3c_context(uint64_t trace_high, uint64_t trace_low, uint64_t span_id,
                             uint64_t parent_id, PyObject *sampled, PyObject *debug,
                             PyObject *members);

/* w3c.extract_dict's answer for the common cases, or NOT_HANDLED. */
static PyObject *
w3c_fast(PyObject *carrier, int environ, int exact)
{
    PyObject *value = lookup(carrier, environ ? s_http_traceparent : s_traceparent);
    if (value == RAISED) {
        return NULL;
    }
    if (value == NULL) {
        return environ || exact ? Py_NewRef(Py_None) : NOT_HANDLED;
    }
    Py_ssize_t length;
    const unsigned char *parent = ascii_of(value, &length);
    uint64_t trace_high, trace_low, span_id;
    /* 00-{trace id}-{parent id}-{flags}: version 00 is exactly 55 characters. */
    if (parent == NULL || length != TRACEPARENT_00_LENGTH || parent[0] != '0' ||
        parent[1] != '0' || parent[2] != '-' || parent[35] != '-' || parent[52] != '-' ||
        parse_id(parent + 3, 32, &trace_high, &trace_low) < 0 ||
        parse_id(parent + 36, 16, &(uint64_t){0}, &span_id) < 0 || hex_digit[parent[53]] < 0 ||
        hex_digit[parent[54]] < 0) {
        return NOT_HANDLED; /* all-zero ids too: the Python function logs them */
    }
    PyObject *sampled = hex_digit[parent[54]] & 1 ? Py_True : Py_False;
    /* The next lookup may run a key's __eq__, which can drop traceparent from the carrier: keep
     * what is still needed of it. */
    unsigned char parent_span_hex[16];
    memcpy(parent_span_hex, parent + 36, 16);
    PyObject *state = lookup(carrier, environ ? s_http_tracestate : s_tracestate);
    if (state == RAISED) {
        return NULL;
    }
    if (state == NULL) {
        if (!(environ || exact) && other_case(carrier, tracestate_names, 1) != 0) {
            return NOT_HANDLED;
        }
        return w3c_context(trace_high, trace_low, span_id, 0, sampled, Py_False, NULL);
    }
    /* Held, as are the cached members below: an allocation may run the garbage collector and
     * with it finalizers that change the carrier or the caches. */
    Py_INCREF(state);
    PyObject *context = w3c_with_state(state, parent_span_hex, trace_high, trace_low, span_id,
                                       sampled);
    Py_DECREF(state);
    return context;
}

/* The rest of w3c_fast, for a tracestate header (held by the caller). */
static PyObject *
w3c_with_state(PyObject *state, const unsigned char *parent_span_hex, uint64_t trace_high,
               uint64_t trace_low, uint64_t span_id, PyObject *sampled)
{
    PyObject *members = NULL; /* borrowed, from a cache */
    PyObject *debug = Py_False;
    uint64_t parent_id = 0;
    Py_ssize_t length;
    {
        const unsigned char *text = ascii_of(state, &length);
        if (text == NULL) {
            return NOT_HANDLED;
        }
        if (length >= OWN_PREFIX_LENGTH && memcmp(text, OWN_PREFIX, OWN_PREFIX_LENGTH) == 0) {
            /* Our own member first, as inject writes it, for this very span:
             * tomograph={span id};{1|0|d}[;{parent id}][,{other members}] */
            Py_ssize_t at = OWN_PREFIX_LENGTH + 18;
            if (length < at || memcmp(text + OWN_PREFIX_LENGTH, parent_span_hex, 16) != 0 ||
                text[at - 2] != ';' ||
                (text[at - 1] != '1' && text[at - 1] != '0' && text[at - 1] != 'd')) {
                return NOT_HANDLED;
            }
            if (text[at - 1] == 'd' && sampled == Py_True) {
                debug = Py_True;
            }
            if (at < length && text[at] == ';') {
                if (length < at + 17 || parse_hex(text + at + 1, 16, &parent_id) < 0) {
                    return NOT_HANDLED;
                }
                at += 17;
            }
            if (at < length) {
                if (text[at] != ',' || length - at - 1 > CACHED_LENGTH) {
                    return NOT_HANDLED;
                }
                if (at + 1 < length) {
                    PyObject *rest = PyUnicode_Substring(state, at + 1, length);
                    if (rest == NULL) {
                        return NULL;
                    }
                    members = lookup(after_ours_cache, rest);
                    Py_DECREF(rest);
                    if (members == RAISED) {
                        return NULL;
                    }
                    if (members == NULL) {
                        return NOT_HANDLED; /* not parsed yet: Python parses and caches it */
                    }
                }
            }
        }
        else if (length) {
            /* Other vendors' members only, parsed before. */
            if (length > CACHED_LENGTH) {
                return NOT_HANDLED;
            }
            members = lookup(parsed_cache, state);
            if (members == RAISED) {
                return NULL;
            }
            if (members == NULL || !PyTuple_CheckExact(members)) {
                return NOT_HANDLED;
            }
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(members); i++) {
                if (is_own_member(PyTuple_GET_ITEM(members, i)) != 0) {
                    return NOT_HANDLED; /* ours, somewhere else: Python reads it */
                }
            }
        }
    }
    if (members != NULL && !PyTuple_CheckExact(members)) {
        return NOT_HANDLED;
    }
    Py_XINCREF(members);
    PyObject *context =
        w3c_context(trace_high, trace_low, span_id, parent_id, sampled, debug, members);
    Py_XDECREF(members);
    return context;
}

/* The context w3c_fast read, its other vendors' members (a tuple, or NULL) in its extra. */
static PyObject *
w3c_context(uint64_t trace_high, uint64_t trace_low, uint64_t span_id, uint64_t parent_id,
            PyObject *sampled, PyObject *debug, PyObject *members)
{
    PyObject *extra = Py_None;
    if (members != NULL && PyTuple_GET_SIZE(members)) {
        extra = PyDict_New();
        if (extra == NULL || PyDict_SetItem(extra, s_tracestate, members) < 0) {
            Py_XDECREF(extra);
            return NULL;
        }
    }
    return make_context(int_of(trace_high, trace_low), PyLong_FromUnsignedLongLong(span_id),
                        parent_id ? PyLong_FromUnsignedLongLong(parent_id) : Py_NewRef(Py_None),
                        sampled, debug, extra == Py_None ? Py_NewRef(Py_None) : extra);
}

static PyObject *
w3c_extract_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return extract_dict_by(w3c_fast, py_w3c_extract_dict, args, nargs, kwnames);
}

static PyObject *
w3c_extract(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return extract_by(w3c_fast, py_w3c_extract, args, nargs, kwnames);
}

/* The fields inject reads, as new references: at their offsets for a TraceContext, by
 * attribute for anything else. 0, or -1 with the exception set if one is missing. */
enum { R_TRACE_ID, R_SPAN_ID, R_PARENT_ID, R_SAMPLED, R_DEBUG, R_EXTRA, READ_FIELDS };
static const int read_context_fields[READ_FIELDS] = {C_TRACE_ID, C_SPAN_ID, C_PARENT_ID,
                                                    C_SAMPLED,  C_DEBUG,   C_EXTRA};

static void
release_fields(PyObject **fields)
{
    for (int i = 0; i < READ_FIELDS; i++) {
        Py_CLEAR(fields[i]);
    }
}

static int
read_fields(PyObject *context, PyObject **fields)
{
    int known = Py_TYPE(context) == context_layout.type;
    for (int i = 0; i < READ_FIELDS; i++) {
        fields[i] = NULL;
    }
    for (int i = 0; i < READ_FIELDS; i++) {
        int field = read_context_fields[i];
        PyObject *value = known ? FIELD(context, context_layout, field) : NULL;
        fields[i] = value != NULL ? Py_NewRef(value)
                                  : PyObject_GetAttr(context, context_layout.name[field]);
        if (fields[i] == NULL) {
            release_fields(fields); /* the exception is left for forward() */
            return -1;
        }
    }
    return 0;
}

/* A context's ids and decision, where they are what inject formats itself: exact ints in
 * range, a bool (or None) decision and debug flag. -1 otherwise. */
typedef struct {
    uint64_t trace_high, trace_low, span_id, parent_id; /* parent_id 0: none */
    int sampled; /* 1, 0, or -1 for None */
    int debug;
} Ids;

static int
ids_of(PyObject **fields, Ids *ids)
{
    uint64_t high;
    PyObject *sampled = fields[R_SAMPLED], *debug = fields[R_DEBUG], *parent = fields[R_PARENT_ID];
    if (halves_of(fields[R_TRACE_ID], &ids->trace_high, &ids->trace_low) < 0 ||
        halves_of(fields[R_SPAN_ID], &high, &ids->span_id) < 0 || high ||
        (debug != Py_True && debug != Py_False) ||
        (sampled != Py_True && sampled != Py_False && sampled != Py_None)) {
        return -1;
    }
    ids->parent_id = 0;
    if (parent != Py_None && (halves_of(parent, &high, &ids->parent_id) < 0 || high)) {
        return -1;
    }
    ids->sampled = sampled == Py_None ? -1 : sampled == Py_True;
    ids->debug = debug == Py_True;
    return 0;
}

/* What follows our own member in tracestate for extra: "" for no foreign members, the cached
 * text for a tuple of them formatted before (a new reference); NULL for Python to decide. */
static PyObject *empty_text;

/* The text cached (in cache) for the members under key in a context's extra, a new reference:
 * "" for none (a None value too where none_is_empty), NULL for Python to decide (not cached
 * yet, not a str, not ASCII where ascii is asked, or an odd extra). The members are held while
 * they are hashed and compared: their own __hash__ or __eq__ may drop extra's reference to
 * them, and finalizers may change the cache. */
static PyObject *
extra_text(PyObject *extra, PyObject *key, PyObject *cache, int ascii, int none_is_empty)
{
    if (extra == Py_None) {
        return Py_NewRef(empty_text);
    }
    if (!PyDict_CheckExact(extra)) {
        return NULL;
    }
    if (PyDict_GET_SIZE(extra) == 0) {
        return Py_NewRef(empty_text);
    }
    PyObject *members = lookup(extra, key);
    if (members == NULL || (none_is_empty && members == Py_None)) {
        return Py_NewRef(empty_text);
    }
    if (members == RAISED || !PyTuple_CheckExact(members)) {
        return NULL; /* the exception, if one, is left for forward() */
    }
    if (PyTuple_GET_SIZE(members) == 0) {
        return Py_NewRef(empty_text);
    }
    Py_INCREF(members);
    PyObject *text = lookup(cache, members);
    Py_ssize_t length;
    if (text == RAISED || text == NULL || !PyUnicode_CheckExact(text) ||
        (ascii && ascii_of(text, &length) == NULL)) {
        text = NULL;
    }
    else {
        Py_INCREF(text);
    }
    Py_DECREF(members);
    return text;
}

static PyObject *
foreign_text(PyObject *extra)
{
    return extra_text(extra, s_tracestate, foreign_cache, 1, 1);
}

static PyObject *
w3c_inject(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *fields[READ_FIELDS];
    Ids ids;
    if (kwnames != NULL || nargs != 2 || !PyDict_CheckExact(args[1]) ||
        read_fields(args[0], fields) < 0) {
        return forward(py_w3c_inject, args, nargs, kwnames);
    }
    PyObject *tail = NULL;
    if (ids_of(fields, &ids) == 0) {
        tail = foreign_text(fields[R_EXTRA]);
    }
    release_fields(fields);
    if (tail == NULL) {
        return forward(py_w3c_inject, args, nargs, kwnames);
    }
    char traceparent[TRACEPARENT_00_LENGTH];
    memcpy(traceparent, "00-", 3);
    write_id(traceparent + 3, ids.trace_high, ids.trace_low, 32);
    traceparent[35] = '-';
    write_hex(traceparent + 36, ids.span_id, 16);
    memcpy(traceparent + 52, ids.sampled == 1 || ids.debug ? "-01" : "-00", 3);
    /* tomograph={span id};{state}[;{parent id}] and the other vendors' members */
    Py_ssize_t tail_length = PyUnicode_GET_LENGTH(tail);
    Py_ssize_t own_length = OWN_PREFIX_LENGTH + 18 + (ids.parent_id ? 17 : 0);
    PyObject *parent = ascii_str(traceparent, TRACEPARENT_00_LENGTH);
    PyObject *state = PyUnicode_New(own_length + tail_length, 127);
    if (parent == NULL || state == NULL) {
        Py_DECREF(tail);
        Py_XDECREF(parent);
        Py_XDECREF(state);
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(state);
    memcpy(out, OWN_PREFIX, OWN_PREFIX_LENGTH);
    write_hex(out + OWN_PREFIX_LENGTH, ids.span_id, 16);
    out += OWN_PREFIX_LENGTH + 16;
    *out++ = ';';
    *out++ = ids.debug ? 'd' : ids.sampled == 1 ? '1' : '0';
    if (ids.parent_id) {
        *out++ = ';';
        write_hex(out, ids.parent_id, 16);
        out += 16;
    }
    memcpy(out, PyUnicode_1BYTE_DATA(tail), (size_t)tail_length);
    Py_DECREF(tail);
    int failed = PyDict_SetItem(args[1], s_traceparent, parent) < 0 ||
                 PyDict_SetItem(args[1], s_tracestate, state) < 0;
    Py_DECREF(parent);
    Py_DECREF(state);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- B3 -------------------------------------------------------------------------------- */

/* An id of one of the widths B3 allows (16, or 16 and 32), parsed from a str; -1 if it is not
 * one (wrong type, length, case, or zero). */
static int
b3_id(PyObject *value, int trace, uint64_t *high, uint64_t *low)
{
    Py_ssize_t length;
    const unsigned char *text = ascii_of(value, &length);
    if (text == NULL || !(length == 16 || (trace && length == 32))) {
        return -1;
    }
    return parse_id(text, length, high, low);
}

/* b3.parse_b3_single's answer for a well-formed header, or NOT_HANDLED. */
static PyObject *
b3_single(PyObject *value)
{
    Py_ssize_t length;
    const unsigned char *text = ascii_of(value, &length);
    if (text == NULL || length > B3_MAX_LENGTH) {
        return NOT_HANDLED;
    }
    Py_ssize_t width = length > 32 && text[32] == '-' ? 32 : 16;
    uint64_t trace_high, trace_low, span_id, parent_id = 0, high;
    if (length < width + 17 || text[width] != '-' ||
        parse_id(text, width, &trace_high, &trace_low) < 0 ||
        parse_id(text + width + 1, 16, &high, &span_id) < 0) {
        return NOT_HANDLED;
    }
    Py_ssize_t at = width + 17;
    PyObject *sampled = Py_None, *debug = Py_False;
    if (at < length) {
        /* -{1|0|d}[-{parent id}] */
        if (length < at + 2 || text[at] != '-') {
            return NOT_HANDLED;
        }
        switch (text[at + 1]) {
        case '1': sampled = Py_True; break;
        case '0': sampled = Py_False; break;
        case 'd': debug = Py_True; break;
        default: return NOT_HANDLED;
        }
        at += 2;
        if (at < length) {
            if (length != at + 17 || text[at] != '-' ||
                parse_id(text + at + 1, 16, &high, &parent_id) < 0) {
                return NOT_HANDLED;
            }
        }
    }
    return make_context(int_of(trace_high, trace_low), PyLong_FromUnsignedLongLong(span_id),
                        parent_id ? PyLong_FromUnsignedLongLong(parent_id) : Py_NewRef(Py_None),
                        sampled, debug, Py_NewRef(Py_None));
}

static PyObject *b3_multi(PyObject **values);

static void
release_values(PyObject **values)
{
    for (int i = 0; i < B3_NAMES; i++) {
        Py_CLEAR(values[i]);
    }
}

/* b3.extract_dict's answer for the common cases, or NOT_HANDLED. */
static PyObject *
b3_fast(PyObject *carrier, int environ, int exact)
{
    PyObject **keys = environ ? b3_environ_keys : b3_keys;
    PyObject *values[B3_NAMES];
    PyObject *single = lookup(carrier, keys[B3_SINGLE]);
    if (single != NULL) {
        return single == RAISED ? NULL : b3_single(single);
    }
    if (!(environ || exact) && other_case(carrier, b3_names, B3_NAMES) != 0) {
        return NOT_HANDLED;
    }
    /* Each value is held: a later lookup may run a key's __eq__, which can drop an earlier one
     * from the carrier. */
    for (int i = 0; i < B3_NAMES; i++) {
        values[i] = NULL;
    }
    for (int i = B3_TRACE_ID; i < B3_NAMES; i++) {
        PyObject *found = lookup(carrier, keys[i]);
        if (found == RAISED) {
            release_values(values);
            return NULL;
        }
        values[i] = Py_XNewRef(found);
    }
    PyObject *context = b3_multi(values);
    release_values(values);
    return context;
}

/* b3_fast's answer for the multi headers' values (NULL where absent), or NOT_HANDLED. */
static PyObject *
b3_multi(PyObject **values)
{
    uint64_t trace_high, trace_low, span_id, parent_id = 0, high;
    if (values[B3_TRACE_ID] == NULL || values[B3_SPAN_ID] == NULL ||
        b3_id(values[B3_TRACE_ID], 1, &trace_high, &trace_low) < 0 ||
        b3_id(values[B3_SPAN_ID], 0, &high, &span_id) < 0 ||
        (values[B3_PARENT_ID] != NULL && b3_id(values[B3_PARENT_ID], 0, &high, &parent_id) < 0)) {
        return NOT_HANDLED;
    }
    PyObject *sampled = Py_None, *debug = Py_False;
    Py_ssize_t length;
    const unsigned char *text;
    if (values[B3_SAMPLED] != NULL) {
        /* 1 or 0; true and false as b3.py accepts them without a second look */
        text = ascii_of(values[B3_SAMPLED], &length);
        if (text == NULL) {
            return NOT_HANDLED;
        }
        if ((length == 1 && text[0] == '1') || (length == 4 && memcmp(text, "true", 4) == 0)) {
            sampled = Py_True;
        }
        else if ((length == 1 && text[0] == '0') ||
                 (length == 5 && memcmp(text, "false", 5) == 0)) {
            sampled = Py_False;
        }
        else {
            return NOT_HANDLED;
        }
    }
    if (values[B3_FLAGS] != NULL) {
        text = ascii_of(values[B3_FLAGS], &length);
        if (text == NULL || length != 1 || (text[0] != '1' && text[0] != '0')) {
            return NOT_HANDLED;
        }
        debug = text[0] == '1' ? Py_True : Py_False;
    }
    return make_context(int_of(trace_high, trace_low), PyLong_FromUnsignedLongLong(span_id),
                        parent_id ? PyLong_FromUnsignedLongLong(parent_id) : Py_NewRef(Py_None),
                        sampled, debug, Py_NewRef(Py_None));
}

static PyObject *
b3_extract_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return extract_dict_by(b3_fast, py_b3_extract_dict, args, nargs, kwnames);
}

static PyObject *
b3_extract(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return extract_by(b3_fast, py_b3_extract, args, nargs, kwnames);
}

/* ``del carrier[key]`` if it is there. */
static inline int
drop(PyObject *carrier, PyObject *key)
{
    int found = PyDict_Contains(carrier, key);
    return found <= 0 ? found : PyDict_DelItem(carrier, key);
}

static inline int
set_hex(PyObject *carrier, PyObject *key, uint64_t high, uint64_t low, int digits)
{
    char text[32];
    write_id(text, high, low, digits);
    PyObject *value = ascii_str(text, digits);
    if (value == NULL) {
        return -1;
    }
    int result = PyDict_SetItem(carrier, key, value);
    Py_DECREF(value);
    return result;
}

static PyObject *
b3_inject(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *fields[READ_FIELDS];
    Ids ids;
    if (kwnames != NULL || nargs != 2 || !PyDict_CheckExact(args[1]) ||
        read_fields(args[0], fields) < 0) {
        return forward(py_b3_inject, args, nargs, kwnames);
    }
    int usable = ids_of(fields, &ids) == 0;
    release_fields(fields);
    if (!usable) {
        return forward(py_b3_inject, args, nargs, kwnames);
    }
    PyObject *carrier = args[1];
    /* As b3.inject writes a dict: headers left from an earlier inject are removed. */
    if (set_hex(carrier, b3_keys[B3_TRACE_ID], ids.trace_high, ids.trace_low,
                ids.trace_high ? 32 : 16) < 0 ||
        set_hex(carrier, b3_keys[B3_SPAN_ID], 0, ids.span_id, 16) < 0 ||
        (ids.parent_id ? set_hex(carrier, b3_keys[B3_PARENT_ID], 0, ids.parent_id, 16)
                       : drop(carrier, b3_keys[B3_PARENT_ID])) < 0) {
        return NULL;
    }
    if (ids.debug) {
        if (PyDict_SetItem(carrier, b3_keys[B3_FLAGS], s_one) < 0 ||
            drop(carrier, b3_keys[B3_SAMPLED]) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (drop(carrier, b3_keys[B3_FLAGS]) < 0 ||
        (ids.sampled < 0 ? drop(carrier, b3_keys[B3_SAMPLED])
                         : PyDict_SetItem(carrier, b3_keys[B3_SAMPLED],
                                          ids.sampled ? s_one : s_zero)) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- propagation setup ------------------------------------------------------------------ */

static PyMethodDef new_context_def = {
    "new_context", (PyCFunction)(void (*)(void))new_context_compiled,
    METH_FASTCALL | METH_KEYWORDS, NULL};
static PyMethodDef w3c_defs[] = {
    {"inject", (PyCFunction)(void (*)(void))w3c_inject, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"extract", (PyCFunction)(void (*)(void))w3c_extract, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"extract_dict", (PyCFunction)(void (*)(void))w3c_extract_dict,
     METH_FASTCALL | METH_KEYWORDS, NULL},
};
static PyMethodDef b3_defs[] = {
    {"inject", (PyCFunction)(void (*)(void))b3_inject, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"extract", (PyCFunction)(void (*)(void))b3_extract, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"extract_dict", (PyCFunction)(void (*)(void))b3_extract_dict,
     METH_FASTCALL | METH_KEYWORDS, NULL},
};
#define FORMAT_FUNCTIONS 3
static PyObject *format_docs[1 + 2 * FORMAT_FUNCTIONS];

/* The compiled functions for defs, with the docstrings of the Python ones (in names). */
static PyObject *
compiled_functions(PyMethodDef *defs, int count, PyObject **python, PyObject **doc_slots,
                   const char *module_name)
{
    PyObject *result = PyTuple_New(count);
    if (result == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        PyObject *doc = PyObject_GetAttrString(python[i], "__doc__");
        const char *text = doc != NULL && PyUnicode_Check(doc) ? PyUnicode_AsUTF8(doc) : NULL;
        if (text == NULL) {
            PyErr_Clear();
            Py_XDECREF(doc);
        }
        else {
            Py_XSETREF(doc_slots[i], doc);
            defs[i].ml_doc = text;
        }
        /* __module__ as the Python function's: doctest finds its examples and runs them here */
        PyObject *name = PyUnicode_FromString(module_name);
        PyObject *function = name == NULL ? NULL : PyCFunction_NewEx(&defs[i], NULL, name);
        Py_XDECREF(name);
        if (function == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, function);
    }
    return result;
}

/* Python functions and caches from names, in the order of needed. */
static int
take_names(PyObject *names, const char **needed, PyObject ***targets, int count)
{
    if (!PyDict_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "setup takes a dict of names");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        PyObject *value = PyDict_GetItemString(names, needed[i]);
        if (value == NULL) {
            PyErr_Format(PyExc_KeyError, "setup needs %s", needed[i]);
            return -1;
        }
        if (strstr(needed[i], "cache") != NULL && !PyDict_Check(value)) {
            PyErr_Format(PyExc_TypeError, "%s is not a dict", needed[i]);
            return -1;
        }
    }
    for (int i = 0; i < count; i++) {
        KEEP(*targets[i], PyDict_GetItemString(names, needed[i]));
    }
    return 0;
}

static PyInterpreterState *context_interpreter = NULL;

static int
propagation_ready(void)
{
    if (context_layout.type == NULL || PyInterpreterState_Get() != context_interpreter) {
        PyErr_SetString(PyExc_RuntimeError, "setup_context() has not run here");
        return 0;
    }
    return 1;
}

/* setup_context(TraceContext, new_context): the compiled new_context. */
static PyObject *
setup_context(PyObject *module, PyObject *args)
{
    PyObject *context_type, *python;
    if (context_layout.type != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O:setup_context", &PyType_Type, &context_type, &python)) {
        return NULL;
    }
    if (((PyTypeObject *)context_type)->tp_base != &PyBaseObject_Type) {
        return PyErr_Format(PyExc_TypeError, "%s is not a plain class",
                            ((PyTypeObject *)context_type)->tp_name);
    }
    for (int c = 0; c < 256; c++) {
        hex_digit[c] = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    }
    struct {
        PyObject **target;
        const char *text;
    } strings[] = {
        {&s_traceparent, "traceparent"},       {&s_tracestate, "tracestate"},
        {&s_http_traceparent, "HTTP_TRACEPARENT"}, {&s_http_tracestate, "HTTP_TRACESTATE"},
        {&s_request_method, "REQUEST_METHOD"}, {&s_wsgi_version, "wsgi.version"},
        {&s_one, "1"},                         {&s_zero, "0"},
        {&empty_text, ""},
    };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        if (*strings[i].target == NULL &&
            (*strings[i].target = PyUnicode_InternFromString(strings[i].text)) == NULL) {
            return NULL;
        }
    }
    for (int i = 0; i < B3_NAMES; i++) {
        if (b3_keys[i] == NULL) {
            char environ_key[32] = "HTTP_";
            for (size_t j = 0; b3_names[i][j]; j++) {
                char c = b3_names[i][j];
                environ_key[5 + j] = c == '-' ? '_' : (char)Py_TOUPPER(c);
            }
            if ((b3_keys[i] = PyUnicode_InternFromString(b3_names[i])) == NULL ||
                (b3_environ_keys[i] = PyUnicode_InternFromString(environ_key)) == NULL) {
                return NULL;
            }
        }
    }
    Layout fields = {0};
    if (read_layout((PyTypeObject *)context_type, context_field_names, CONTEXT_FIELDS, &fields) <
        0) {
        return NULL;
    }
    PyObject *slots = PyObject_GetAttrString(context_type, "__slots__");
    Py_ssize_t count = slots == NULL ? -1 : PyObject_Length(slots);
    Py_XDECREF(slots);
    if (count < 0) {
        return NULL;
    }
    if (count != CONTEXT_FIELDS) {
        return PyErr_Format(PyExc_TypeError, "%s has slots setup_context() does not know",
                            ((PyTypeObject *)context_type)->tp_name);
    }
    PyObject *result = compiled_functions(&new_context_def, 1, &python, format_docs,
                                          "tomograph.propagation._context");
    if (result == NULL) {
        return NULL;
    }
    KEEP(py_new_context, python);
    context_layout = fields;
    context_interpreter = PyInterpreterState_Get();
    PyObject *function = Py_NewRef(PyTuple_GET_ITEM(result, 0));
    Py_DECREF(result);
    return function;
}

/* setup_w3c(names): (inject, extract, extract_dict) of tomograph.propagation.w3c. */
static PyObject *
setup_w3c(PyObject *module, PyObject *names)
{
    static const char *needed[] = {"inject", "extract", "extract_dict", "foreign_cache",
                                   "parsed_cache", "after_ours_cache"};
    PyObject **targets[] = {&py_w3c_inject, &py_w3c_extract, &py_w3c_extract_dict,
                            &foreign_cache, &parsed_cache, &after_ours_cache};
    if (py_w3c_inject != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!propagation_ready() || take_names(names, needed, targets, 6) < 0) {
        return NULL;
    }
    PyObject *python[] = {py_w3c_inject, py_w3c_extract, py_w3c_extract_dict};
    return compiled_functions(w3c_defs, FORMAT_FUNCTIONS, python, format_docs + 1,
                              "tomograph.propagation.w3c");
}

/* setup_b3(names): (inject, extract, extract_dict) of tomograph.propagation.b3. */
static PyObject *
setup_b3(PyObject *module, PyObject *names)
{
    static const char *needed[] = {"inject", "extract", "extract_dict"};
    PyObject **targets[] = {&py_b3_inject, &py_b3_extract, &py_b3_extract_dict};
    if (py_b3_inject != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!propagation_ready() || take_names(names, needed, targets, 3) < 0) {
        return NULL;
    }
    PyObject *python[] = {py_b3_inject, py_b3_extract, py_b3_extract_dict};
    return compiled_functions(b3_defs, FORMAT_FUNCTIONS, python,
                              format_docs + 1 + FORMAT_FUNCTIONS, "tomograph.propagation.b3");
}

/* -- W3C baggage ------------------------------------------------------------------------ */

static PyObject *py_baggage_inject, *py_baggage_extract_dict;
/* baggage's caches: parsed entries by header text, header text by entries. */
static PyObject *baggage_parsed_cache, *baggage_formatted_cache;
static PyObject *s_baggage, *s_http_baggage;
static const char *baggage_names[1] = {"baggage"};
#define BAGGAGE_MAX_READ_LENGTH 65536

/* baggage.extract_dict's answer when the header is absent or parsed before, or NOT_HANDLED. */
static PyObject *
baggage_fast(PyObject *carrier, int environ, int exact)
{
    PyObject *value = lookup(carrier, environ ? s_http_baggage : s_baggage);
    if (value == RAISED) {
        return NULL;
    }
    if (value == NULL || value == Py_None) {
        if (!(environ || exact) && other_case(carrier, baggage_names, 1) != 0) {
            return NOT_HANDLED;
        }
        return PyTuple_New(0);
    }
    if (!PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) > BAGGAGE_MAX_READ_LENGTH) {
        return NOT_HANDLED;
    }
    if (PyUnicode_GET_LENGTH(value) == 0) {
        return PyTuple_New(0);
    }
    PyObject *entries = lookup(baggage_parsed_cache, value);
    return entries == RAISED ? NULL : entries == NULL ? NOT_HANDLED : Py_NewRef(entries);
}

static PyObject *
baggage_extract_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return extract_dict_by(baggage_fast, py_baggage_extract_dict, args, nargs, kwnames);
}

/* The header text for a context's extra: "" for no baggage, the cached text for entries
 * formatted before (a new reference); NULL for Python to decide. */
static PyObject *
baggage_text(PyObject *extra)
{
    return extra_text(extra, s_baggage, baggage_formatted_cache, 0, 0);
}

static PyObject *
baggage_inject(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 2 || !PyDict_CheckExact(args[1])) {
        return forward(py_baggage_inject, args, nargs, kwnames);
    }
    PyObject *context = args[0];
    PyObject *extra = Py_TYPE(context) == context_layout.type
                          ? Py_XNewRef(FIELD(context, context_layout, C_EXTRA))
                          : PyObject_GetAttr(context, context_layout.name[C_EXTRA]);
    PyObject *text = extra == NULL ? NULL : baggage_text(extra);
    Py_XDECREF(extra);
    if (text == NULL) {
        return forward(py_baggage_inject, args, nargs, kwnames);
    }
    int failed = PyUnicode_GET_LENGTH(text) == 0 ? drop(args[1], s_baggage) < 0
                                                 : PyDict_SetItem(args[1], s_baggage, text) < 0;
    Py_DECREF(text);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef baggage_defs[] = {
    {"inject", (PyCFunction)(void (*)(void))baggage_inject, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"extract_dict", (PyCFunction)(void (*)(void))baggage_extract_dict,
     METH_FASTCALL | METH_KEYWORDS, NULL},
};
static PyObject *baggage_docs[2];

/* setup_baggage(names): (inject, extract_dict) of tomograph.propagation.baggage. */
static PyObject *
setup_baggage(PyObject *module, PyObject *names)
{
    static const char *needed[] = {"inject", "extract_dict", "parsed_cache", "formatted_cache"};
    PyObject **targets[] = {&py_baggage_inject, &py_baggage_extract_dict, &baggage_parsed_cache,
                            &baggage_formatted_cache};
    if (py_baggage_inject != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!propagation_ready()) {
        return NULL;
    }
    if ((s_baggage == NULL && (s_baggage = PyUnicode_InternFromString("baggage")) == NULL) ||
        (s_http_baggage == NULL &&
         (s_http_baggage = PyUnicode_InternFromString("HTTP_BAGGAGE")) == NULL) ||
        take_names(names, needed, targets, 4) < 0) {
        return NULL;
    }
    PyObject *python[] = {py_baggage_inject, py_baggage_extract_dict};
    return compiled_functions(baggage_defs, 2, python, baggage_docs,
                              "tomograph.propagation.baggage");
}

/* -- Headers as (name, value) pairs (ASGI) ----------------------------------------------- */

static PyObject *py_known_pairs, *name_set_type;
static PyObject *s_names, *s_lengths;

/* One pair's text as carriers._text reads it, for an exact str or exact bytes whose bytes are
 * all ASCII (a new reference); NOT_HANDLED for anything else (the Python function decides). */
static PyObject *
pair_text(PyObject *value)
{
    if (PyUnicode_CheckExact(value)) {
        return Py_NewRef(value);
    }
    if (PyBytes_CheckExact(value)) {
        /* latin-1 never fails: the same text carriers._text makes */
        return PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL);
    }
    return NOT_HANDLED;
}

/* name lower-cased as str.lower() does, for an exact str or bytes that is ASCII (a new
 * reference); NOT_HANDLED for anything else. */
static PyObject *
pair_name(PyObject *raw, Py_ssize_t length)
{
    const unsigned char *text;
    if (PyUnicode_CheckExact(raw)) {
        if (!PyUnicode_IS_ASCII(raw)) {
            return NOT_HANDLED;
        }
        text = PyUnicode_1BYTE_DATA(raw);
    }
    else {
        text = (const unsigned char *)PyBytes_AS_STRING(raw);
    }
    PyObject *name = PyUnicode_New(length, 127);
    if (name == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(name);
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = text[i];
        if (c >= 0x80) {
            Py_DECREF(name);
            return NOT_HANDLED; /* latin-1 letters lower-case beyond ASCII: Python does it */
        }
        out[i] = (Py_UCS1)Py_TOLOWER(c);
    }
    return name;
}

/* The wanted lengths of a NameSet's lengths (a frozenset of small ints) as bits; 0 when one is
 * not an exact int below 64 (then Python reads the pairs), or 0 with an exception set. An
 * iterator rather than _PySet_NextEntry: Python 3.13 moved that one out of the public headers,
 * and compilers that refuse implicit declarations (GCC 14, clang) would then build no
 * extension at all. Iterating an exact frozenset runs none of the caller's code. */
static uint64_t
length_bits_uncached(PyObject *lengths)
{
    uint64_t bits = 0;
    PyObject *iterator = PyObject_GetIter(lengths);
    if (iterator == NULL) {
        return 0;
    }
    PyObject *item;
    while ((item = PyIter_Next(iterator)) != NULL) {
        long length = PyLong_CheckExact(item) ? PyLong_AsLong(item) : -1;
        Py_DECREF(item);
        if (length < 0 || length >= 64) {
            PyErr_Clear(); /* an int too large for a long */
            bits = 0;
            break;
        }
        bits |= (uint64_t)1 << length;
    }
    Py_DECREF(iterator);
    return PyErr_Occurred() ? 0 : bits; /* 0 with PyIter_Next's exception, if it raised */
}

/* The last few frozensets of lengths read and their bits: the same few NameSets come every
 * request, and iterating one costs about 1,500 instructions of a request's 3 us. Each
 * frozenset is held, so its address names it (never another object's), and it never changes. */
#define LENGTHS_CACHED 4
static PyObject *cached_lengths[LENGTHS_CACHED];
static uint64_t cached_bits[LENGTHS_CACHED];
static int lengths_next;

/* length_bits_uncached(lengths), remembered for the exact frozensets that gave bits */
static uint64_t
length_bits(PyObject *lengths)
{
    for (int i = 0; i < LENGTHS_CACHED; i++) {
        if (lengths == cached_lengths[i]) {
            return cached_bits[i];
        }
    }
    uint64_t bits = length_bits_uncached(lengths);
    if (bits != 0) {
        PyObject *previous = cached_lengths[lengths_next];
        cached_lengths[lengths_next] = Py_NewRef(lengths);
        cached_bits[lengths_next] = bits;
        lengths_next = (lengths_next + 1) % LENGTHS_CACHED;
        Py_XDECREF(previous); /* after the swap: freeing it runs no code that reads these */
    }
    return bits;
}

/* The names of the last few wanted frozensets read, when all are exact str: a header name of
 * the right length is lowered into a buffer and compared with them, and the wanted str itself
 * is the key. Making a str of the name and hashing it to look it up in the set cost about 500
 * instructions of a request's 3 us (ASGI's user-agent has the length of tracestate). Each
 * frozenset is held, so its address names it and its items stay alive; it never changes.
 * Several: a request without trace ids reads its pairs again for baggage, with other names. */
#define MAX_TABLE_NAMES 32
#define NAME_TABLES 4
typedef struct {
    PyObject *wanted;                    /* held; NULL for an empty entry */
    int count;                           /* -1: some item is not an exact str */
    PyObject *names[MAX_TABLE_NAMES];    /* borrowed from wanted */
} NameTable;
static NameTable name_tables[NAME_TABLES];
static int name_tables_next;

/* The table of wanted (an exact frozenset), made if not there; NULL with an exception set if
 * iterating it failed (no memory). Making it may run a finalizer that reads other names and
 * so replaces entries: the caller checks that the entry still holds wanted before each use. */
static NameTable *
name_table(PyObject *wanted)
{
    for (int i = 0; i < NAME_TABLES; i++) {
        if (name_tables[i].wanted == wanted) {
            return &name_tables[i];
        }
    }
    PyObject *items = PySequence_Tuple(wanted); /* iterating a frozenset runs no caller code */
    if (items == NULL) {
        return NULL;
    }
    PyObject *names[MAX_TABLE_NAMES];
    int count = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(items); i++) {
        PyObject *name = PyTuple_GET_ITEM(items, i);
        if (!PyUnicode_CheckExact(name) || count == MAX_TABLE_NAMES) {
            count = -1; /* set lookups decide: an item's __eq__ may run there */
            break;
        }
        if (PyUnicode_IS_ASCII(name) && PyUnicode_GET_LENGTH(name) < 64) {
            names[count++] = name; /* others never equal a lowered ASCII name */
        }
    }
    NameTable *table = &name_tables[name_tables_next];
    name_tables_next = (name_tables_next + 1) % NAME_TABLES;
    PyObject *previous = table->wanted;
    table->wanted = Py_NewRef(wanted);
    table->count = count;
    if (count > 0) {
        memcpy(table->names, names, sizeof(PyObject *) * (size_t)count);
    }
    /* after the entry is whole: freeing these may run code that reads names again */
    Py_DECREF(items);
    Py_XDECREF(previous);
    return table;
}

/* The name in table equal to raw (an exact str or bytes of length below 64) lower-cased, a new
 * reference; Py_None if none is; NOT_HANDLED for a name that is not ASCII. */
static PyObject *
table_name(const NameTable *table, PyObject *raw, Py_ssize_t length)
{
    const unsigned char *text = PyUnicode_CheckExact(raw)
                                    ? (PyUnicode_IS_ASCII(raw) ? PyUnicode_1BYTE_DATA(raw) : NULL)
                                    : (const unsigned char *)PyBytes_AS_STRING(raw);
    if (text == NULL) {
        return NOT_HANDLED;
    }
    unsigned char lowered[64];
    for (Py_ssize_t i = 0; i < length; i++) {
        if (text[i] >= 0x80) {
            return NOT_HANDLED; /* latin-1 letters lower-case beyond ASCII: Python does it */
        }
        lowered[i] = (unsigned char)Py_TOLOWER(text[i]);
    }
    for (int i = 0; i < table->count; i++) {
        PyObject *name = table->names[i];
        if (PyUnicode_GET_LENGTH(name) == length &&
            memcmp(PyUnicode_1BYTE_DATA(name), lowered, (size_t)length) == 0) {
            return Py_NewRef(name);
        }
    }
    return Py_NewRef(Py_None);
}

/* Adds item (a pair, held by the caller) to found if its name is wanted: 0 (added or skipped),
 * 1 for NOT_HANDLED (not an exact 2-tuple or list of exact str or bytes, or a name that is not
 * ASCII), -1 with an exception set. */
static int
read_pair(PyObject *found, PyObject *item, PyObject *wanted, const NameTable *table, uint64_t bits)
{
    if (!PyTuple_CheckExact(item) && !PyList_CheckExact(item)) {
        return 1;
    }
    if (PySequence_Fast_GET_SIZE(item) != 2) {
        return 0;
    }
    PyObject *raw = PySequence_Fast_GET_ITEM(item, 0);
    Py_ssize_t length;
    if (PyUnicode_CheckExact(raw)) {
        length = PyUnicode_GET_LENGTH(raw);
    }
    else if (PyBytes_CheckExact(raw)) {
        length = PyBytes_GET_SIZE(raw);
    }
    else {
        return 1;
    }
    if (length >= 64 || !(bits >> length & 1)) {
        return 0; /* cannot be a wanted name: skipped without decoding */
    }
    PyObject *name;
    if (table->wanted == wanted && table->count >= 0) {
        /* read again each round: a finalizer run by an allocation may read other sets */
        name = table_name(table, raw, length);
        if (name == NOT_HANDLED) {
            return 1;
        }
        if (name == Py_None) {
            Py_DECREF(name);
            return 0;
        }
    }
    else {
        name = pair_name(raw, length);
        if (name == NULL) {
            return -1;
        }
        if (name == NOT_HANDLED) {
            return 1;
        }
        /* may run an item's __eq__ (a str subclass in a caller's NameSet): item is held, but a
         * list pair may lose its value meanwhile, as Python's item[1] then finds */
        int known = PySet_Contains(wanted, name);
        if (known <= 0) {
            Py_DECREF(name);
            return known;
        }
        if (PySequence_Fast_GET_SIZE(item) < 2) {
            Py_DECREF(name);
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            return -1;
        }
    }
    PyObject *value = pair_text(PySequence_Fast_GET_ITEM(item, 1));
    if (value == NULL || value == NOT_HANDLED) {
        Py_DECREF(name);
        return value == NULL ? -1 : 1;
    }
    PyObject *earlier = PyDict_GetItemWithError(found, name); /* str keys: never raises */
    int failed;
    if (earlier == NULL) {
        failed = PyDict_SetItem(found, name, value) < 0;
    }
    else if (PyList_CheckExact(earlier)) {
        failed = PyList_Append(earlier, value) < 0;
    }
    else {
        /* held: a collection run by PyList_New may run code that empties found */
        Py_INCREF(earlier);
        PyObject *both = PyList_New(2);
        failed = both == NULL;
        if (failed) {
            Py_DECREF(earlier);
        }
        else {
            PyList_SET_ITEM(both, 0, earlier);
            PyList_SET_ITEM(both, 1, Py_NewRef(value));
            failed = PyDict_SetItem(found, name, both) < 0;
            Py_DECREF(both);
        }
    }
    Py_DECREF(name);
    Py_DECREF(value);
    return failed ? -1 : 0;
}

/* The known pairs of pairs, or NOT_HANDLED at the first item read_pair does not handle
 * (Python then reads the same pairs again from the start). */
static PyObject *
known_pairs_fast(PyObject *pairs, PyObject *wanted, uint64_t bits)
{
    NameTable *table = name_table(wanted);
    if (table == NULL) {
        return NULL;
    }
    PyObject *found = PyDict_New();
    if (found == NULL) {
        return NULL;
    }
    /* The size and each item are read again every round, as Python's loop does: a finalizer
     * run by the collector when found grows may change a list of pairs. Each item is held
     * for its round, as Python's loop variable holds it. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(pairs); i++) {
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(pairs, i));
        int status = read_pair(found, item, wanted, table, bits);
        Py_DECREF(item);
        if (status != 0) {
            Py_DECREF(found);
            return status > 0 ? NOT_HANDLED : NULL;
        }
    }
    return found;
}

/* known_pairs(pairs, names): exact lists and tuples of pairs here, anything else in Python. */
static PyObject *
known_pairs_compiled(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 2 || (!PyList_CheckExact(args[0]) && !PyTuple_CheckExact(args[0])) ||
        (PyObject *)Py_TYPE(args[1]) != name_set_type) {
        return forward(py_known_pairs, args, nargs, kwnames);
    }
    /* NameSet has slots: its attributes are read without running any code of the caller's */
    PyObject *wanted = PyObject_GetAttr(args[1], s_names);
    PyObject *lengths = wanted == NULL ? NULL : PyObject_GetAttr(args[1], s_lengths);
    PyObject *answer = NOT_HANDLED;
    if (lengths != NULL && PyFrozenSet_CheckExact(wanted) && PyFrozenSet_CheckExact(lengths)) {
        uint64_t bits = length_bits(lengths);
        if (bits != 0) {
            answer = known_pairs_fast(args[0], wanted, bits);
        }
    }
    Py_XDECREF(wanted);
    Py_XDECREF(lengths);
    if (answer != NOT_HANDLED) {
        return answer;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return forward(py_known_pairs, args, nargs, kwnames);
}

static PyMethodDef carriers_defs[] = {
    {"known_pairs", (PyCFunction)(void (*)(void))known_pairs_compiled,
     METH_FASTCALL | METH_KEYWORDS, NULL},
};
static PyObject *carriers_docs[1];

/* setup_carriers(names): (known_pairs,) of tomograph.propagation.carriers. */
static PyObject *
setup_carriers(PyObject *module, PyObject *names)
{
    static const char *needed[] = {"known_pairs", "NameSet"};
    PyObject **targets[] = {&py_known_pairs, &name_set_type};
    if (py_known_pairs != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!propagation_ready()) {
        return NULL;
    }
    if ((s_names == NULL && (s_names = PyUnicode_InternFromString("names")) == NULL) ||
        (s_lengths == NULL && (s_lengths = PyUnicode_InternFromString("lengths")) == NULL) ||
        take_names(names, needed, targets, 2) < 0) {
        return NULL;
    }
    if (!PyType_Check(name_set_type)) {
        Py_CLEAR(py_known_pairs);
        PyErr_SetString(PyExc_TypeError, "NameSet is not a class");
        return NULL;
    }
    PyObject *python[] = {py_known_pairs};
    return compiled_functions(carriers_defs, 1, python, carriers_docs,
                              "tomograph.propagation.carriers");
}

/* -- The composite propagator's reader of dicts and environs ----------------------------- */

/* composite._extract_dict(state, carrier, known, source) step by step, with the same calls and
 * lookups in the same order: the Python function's interpretation is what it saves (about
 * 5,000 instructions of a request's 9,000). Whatever the carrier's keys do when compared or
 * hashed happens here as it happens there, once. */

static PyObject *py_composite_extract_dict, *slow;
static PyObject *s_keys, *s_isdisjoint, *s_issuperset;
enum {
    X_DICT_PLAN,
    X_ENVIRON_PLAN,
    X_HEADER_KEYS,
    X_ENVIRON_KEYS,
    X_NAMES,
    X_KNOWN_NAMES,
    X_BAGGAGE_EXTRACT_DICT,
    X_BAGGAGE_EXTRACT,
    X_JAEGER_EXTRACT_BAGGAGE,
    X_MERGE_BAGGAGE,
    X_OTHER_CASE,
    X_WITH_ENTRIES,
    X_FIELDS
};
/* composite's _ENVIRON_BAGGAGE and baggage.BAGGAGE; the Jaeger baggage keys, as dict keys then
 * as environ keys */
static PyObject *x_baggage_keys[2], *x_jaeger_keys, *x_jaeger_environ_keys;

/* 1 if a method of object called with argument answers True, 0 if False; -1 for an error. */
static int
method_is_true(PyObject *object, PyObject *name, PyObject *argument)
{
    PyObject *answer = PyObject_CallMethodOneArg(object, name, argument);
    if (answer == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return truth;
}

/* The items of the last few frozensets read, as tuples: the propagator's same name sets come
 * every request, and making the tuple costs about 1,500 instructions of a request's 3 us. Each
 * frozenset is held, so its address names it (never another object's), and it never changes. */
#define ITEMS_CACHED 4
static PyObject *items_of[ITEMS_CACHED][2]; /* (frozenset, tuple of its items) */
static int items_next;

/* The items of the exact frozenset set as a tuple (a new reference), read through its iterator
 * rather than _PySet_NextEntry (not declared by Python 3.13's public headers); iterating a
 * frozenset runs no code of the caller's. */
static PyObject *
frozenset_items(PyObject *set)
{
    for (int i = 0; i < ITEMS_CACHED; i++) {
        if (items_of[i][0] == set) {
            return Py_NewRef(items_of[i][1]);
        }
    }
    PyObject *items = PySequence_Tuple(set);
    if (items == NULL) {
        return NULL;
    }
    PyObject *old_set = items_of[items_next][0], *old_items = items_of[items_next][1];
    items_of[items_next][0] = Py_NewRef(set);
    items_of[items_next][1] = Py_NewRef(items);
    items_next = (items_next + 1) % ITEMS_CACHED;
    /* after the swap: freeing them (frozensets and tuples of str) reads none of these */
    Py_XDECREF(old_set);
    Py_XDECREF(old_items);
    return items;
}

/* carrier.keys().isdisjoint(keys) for a frozenset of exact str, as dict views do it: when the
 * set is no larger than the dict, each of its names is looked up in the dict (a key's __eq__
 * runs as it would there); else each key of the dict is looked up in the set, done here only
 * while the keys are exact str (no code of the caller's runs then). 1 if disjoint, 0 if not, -1
 * for an error; NOT_DECIDED when the method must answer. */
#define NOT_DECIDED 2
static int
keys_disjoint_here(PyObject *carrier, PyObject *keys)
{
    if (!PyFrozenSet_CheckExact(keys)) {
        return NOT_DECIDED;
    }
    /* The frozenset's items as a tuple (see frozenset_items); the tuple holds the items while
     * they are looked up. */
    PyObject *names = frozenset_items(keys);
    if (names == NULL) {
        return -1;
    }
    int answer = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(names, i))) {
            answer = NOT_DECIDED;
            goto done;
        }
    }
    if (PyTuple_GET_SIZE(names) <= PyDict_GET_SIZE(carrier)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
            int present = PyDict_Contains(carrier, PyTuple_GET_ITEM(names, i));
            if (present != 0) {
                answer = present < 0 ? -1 : 0;
                goto done;
            }
        }
        goto done;
    }
    PyObject *key, *value;
    Py_ssize_t position = 0;
    while (PyDict_Next(carrier, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            answer = NOT_DECIDED; /* nothing of the caller's ran yet: the method starts over */
            goto done;
        }
    }
    position = 0;
    while (PyDict_Next(carrier, &position, &key, &value)) {
        int present = PySet_Contains(keys, key); /* str in a set of str: no code of the caller's */
        if (present != 0) {
            answer = present < 0 ? -1 : 0;
            goto done;
        }
    }
done:
    Py_DECREF(names);
    return answer;
}

/* carrier.keys().isdisjoint(keys) */
static int
keys_disjoint(PyObject *carrier, PyObject *keys)
{
    int here = keys_disjoint_here(carrier, keys);
    if (here != NOT_DECIDED) {
        return here;
    }
    PyObject *view = PyObject_CallMethodNoArgs(carrier, s_keys);
    if (view == NULL) {
        return -1;
    }
    int answer = method_is_true(view, s_isdisjoint, keys);
    Py_DECREF(view);
    return answer;
}

/* function(arguments...) */
static inline PyObject *
call(PyObject *function, PyObject **arguments, size_t count)
{
    return PyObject_Vectorcall(function, arguments, count, NULL);
}

/* 1 if plan is a tuple of (keys, fast, general) tuples with keys a tuple, as Propagator makes
 * it; else 0 (then the Python function reads it). */
static int
plan_is_exact(PyObject *plan)
{
    if (!PyTuple_CheckExact(plan)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i);
        if (!PyTuple_CheckExact(step) || PyTuple_GET_SIZE(step) != 3 ||
            !PyTuple_CheckExact(PyTuple_GET_ITEM(step, 0))) {
            return 0;
        }
    }
    return 1;
}

/* The context of the first format in plan whose presence keys are in carrier and that reads
 * one (a new reference), None if none does, NULL for an error. */
static PyObject *
first_context(PyObject *plan, PyObject *carrier, int environ)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
        PyObject *step = PyTuple_GET_ITEM(plan, i); /* checked by plan_is_exact */
        PyObject *keys = PyTuple_GET_ITEM(step, 0);
        int present = 0;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(keys) && !present; k++) {
            present = PyDict_Contains(carrier, PyTuple_GET_ITEM(keys, k));
            if (present < 0) {
                return NULL;
            }
        }
        if (!present) {
            continue;
        }
        PyObject *arguments[] = {carrier, environ ? Py_True : Py_False, Py_True};
        PyObject *context = call(PyTuple_GET_ITEM(step, 1), arguments, 3);
        if (context == slow) {
            Py_DECREF(context);
            context = call(PyTuple_GET_ITEM(step, 2), arguments, 1);
        }
        if (context != Py_None) {
            return context; /* or NULL */
        }
        Py_DECREF(context);
    }
    return Py_NewRef(Py_None);
}

/* The baggage of carrier after its context was read (a new reference; () for none). */
static PyObject *
composite_baggage(PyObject *const *state, PyObject *carrier, int environ, int known,
                  PyObject *source)
{
    PyObject *entries = PyTuple_New(0);
    if (entries == NULL) {
        return NULL;
    }
    PyObject *extract_dict = state[X_BAGGAGE_EXTRACT_DICT];
    if (extract_dict != Py_None) {
        int present = PyDict_Contains(carrier, x_baggage_keys[environ ? 0 : 1]);
        if (present < 0) {
            goto error;
        }
        if (present) {
            PyObject *arguments[] = {carrier, environ ? Py_True : Py_False, Py_True};
            Py_SETREF(entries, call(extract_dict, arguments, 3));
            if (entries == slow) {
                Py_SETREF(entries, call(state[X_BAGGAGE_EXTRACT], arguments, 1));
            }
            if (entries == NULL) {
                return NULL;
            }
        }
    }
    PyObject *jaeger = state[X_JAEGER_EXTRACT_BAGGAGE];
    if (jaeger != Py_None) {
        PyObject *keys = environ ? x_jaeger_environ_keys : x_jaeger_keys;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(keys); k++) {
            int present = PyDict_Contains(carrier, PyTuple_GET_ITEM(keys, k));
            if (present < 0) {
                goto error;
            }
            if (!present) {
                continue;
            }
            PyObject *argument[] = {known ? source : carrier};
            PyObject *found = call(jaeger, argument, 1);
            int some = found == NULL ? -1 : PyObject_IsTrue(found);
            if (some > 0) {
                int have = PyObject_IsTrue(entries);
                if (have < 0) {
                    some = -1;
                }
                else if (have) {
                    PyObject *arguments[] = {entries, found};
                    Py_SETREF(found, call(state[X_MERGE_BAGGAGE], arguments, 2));
                    some = found == NULL ? -1 : 1;
                }
                if (some > 0) {
                    Py_SETREF(entries, Py_NewRef(found));
                }
            }
            Py_XDECREF(found);
            if (some < 0) {
                goto error;
            }
            break;
        }
    }
    return entries;
error:
    Py_DECREF(entries);
    return NULL;
}

static PyObject *
composite_extract_dict(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 4 || !PyTuple_CheckExact(args[0]) ||
        PyTuple_GET_SIZE(args[0]) != X_FIELDS || !PyDict_CheckExact(args[1]) ||
        (args[2] != Py_True && args[2] != Py_False)) {
        return forward(py_composite_extract_dict, args, nargs, kwnames);
    }
    PyObject *const *state = &PyTuple_GET_ITEM(args[0], 0);
    PyObject *carrier = args[1], *plan;
    int known = args[2] == Py_True, environ = 0, absent;
    if (!plan_is_exact(state[X_DICT_PLAN]) || !plan_is_exact(state[X_ENVIRON_PLAN])) {
        return forward(py_composite_extract_dict, args, nargs, kwnames);
    }
    if (known) {
        absent = keys_disjoint(carrier, state[X_HEADER_KEYS]);
        plan = state[X_DICT_PLAN];
    }
    else {
        environ = PyDict_Contains(carrier, s_request_method);
        if (environ == 0) {
            environ = PyDict_Contains(carrier, s_wsgi_version);
        }
        if (environ < 0) {
            return NULL;
        }
        if (environ) {
            absent = keys_disjoint(carrier, state[X_ENVIRON_KEYS]);
            plan = state[X_ENVIRON_PLAN];
        }
        else {
            int only_known = method_is_true(state[X_KNOWN_NAMES], s_issuperset, carrier);
            if (only_known < 0) {
                return NULL;
            }
            if (!only_known) {
                PyObject *arguments[] = {carrier, state[X_NAMES]};
                PyObject *other = call(state[X_OTHER_CASE], arguments, 2);
                int truth = other == NULL ? -1 : PyObject_IsTrue(other);
                Py_XDECREF(other);
                if (truth < 0) {
                    return NULL;
                }
                if (truth) {
                    return Py_NewRef(slow);
                }
            }
            absent = keys_disjoint(carrier, state[X_HEADER_KEYS]);
            plan = state[X_DICT_PLAN];
        }
    }
    if (absent != 0) {
        return absent < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *context = first_context(plan, carrier, environ);
    if (context == NULL || context == Py_None) {
        return context;
    }
    PyObject *entries = composite_baggage(state, carrier, environ, known, args[3]);
    int some = entries == NULL ? -1 : PyObject_IsTrue(entries);
    if (some > 0) {
        PyObject *arguments[] = {context, entries};
        Py_SETREF(context, call(state[X_WITH_ENTRIES], arguments, 2));
    }
    Py_XDECREF(entries);
    if (some < 0) {
        Py_DECREF(context);
        return NULL;
    }
    return context;
}

/* composite._extract_pairs(state, pairs): the known pairs, then the dict reader on them. */
static PyObject *py_composite_extract_pairs;

static PyObject *
extract_pairs(PyObject *state, PyObject *pairs)
{
    PyObject *arguments[] = {pairs, PyTuple_GET_ITEM(state, X_NAMES)};
    PyObject *known = known_pairs_compiled(NULL, arguments, 2, NULL);
    if (known == NULL) {
        return NULL;
    }
    PyObject *dict_arguments[] = {state, known, Py_True, pairs};
    PyObject *context = composite_extract_dict(NULL, dict_arguments, 4, NULL);
    Py_DECREF(known);
    return context;
}

static PyObject *
composite_extract_pairs(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 2 || !PyTuple_CheckExact(args[0]) ||
        PyTuple_GET_SIZE(args[0]) != X_FIELDS) {
        return forward(py_composite_extract_pairs, args, nargs, kwnames);
    }
    return extract_pairs(args[0], args[1]);
}

/* Propagator.extract(carrier): dicts and lists or tuples of pairs here, step by step as the
 * Python method takes them; the reader of other carriers (_extract_read) and the logging of
 * a failure (_extraction_failed) in Python. A server request saves the method's Python frame
 * (about 600 instructions of its 3 us). */
static PyObject *py_propagator_extract, *py_extract_read, *py_extraction_failed, *s_dict_state;

/* The exception set, taken (a new reference; the error indicator is cleared). */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

static PyObject *
propagator_extract(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames != NULL || nargs != 1) {
        return call_python(py_propagator_extract, self, args, nargs, kwnames);
    }
    PyObject *carrier = args[0], *context;
    int dict = PyDict_CheckExact(carrier);
    if (dict || PyList_CheckExact(carrier) || PyTuple_CheckExact(carrier)) {
        PyObject *state = PyObject_GetAttr(self, s_dict_state);
        if (state == NULL) {
            context = NULL;
        }
        else if (dict) {
            PyObject *arguments[] = {state, carrier, Py_False, Py_None};
            context = composite_extract_dict(NULL, arguments, 4, NULL);
        }
        else {
            PyObject *arguments[] = {state, carrier};
            context = composite_extract_pairs(NULL, arguments, 2, NULL);
        }
        Py_XDECREF(state);
    }
    else {
        context = Py_NewRef(slow);
    }
    if (context == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL; /* KeyboardInterrupt, SystemExit: to the caller, as in Python */
        }
        PyObject *error = take_exception();
        if (error == NULL) {
            return NULL;
        }
        context = call1(py_extraction_failed, error);
        Py_DECREF(error);
        return context;
    }
    if (context == slow) {
        Py_DECREF(context);
        return call2(py_extract_read, self, carrier);
    }
    return context;
}

static PyMethodDef composite_defs[] = {
    {"_extract_dict", (PyCFunction)(void (*)(void))composite_extract_dict,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"_extract_pairs", (PyCFunction)(void (*)(void))composite_extract_pairs,
     METH_FASTCALL | METH_KEYWORDS, NULL},
};
static PyObject *composite_docs[2];

static PyMethodDef propagator_extract_def = {
    "extract", (PyCFunction)(void (*)(void))propagator_extract, METH_FASTCALL | METH_KEYWORDS,
    "extract($self, carrier)\n--\n\n"};
static PyObject *propagator_extract_doc;

/* setup_composite(names): (_extract_dict, _extract_pairs, Propagator.extract) of
 * tomograph.propagation.composite. */
static PyObject *
setup_composite(PyObject *module, PyObject *names)
{
    static const char *needed[] = {"_extract_dict", "SLOW", "environ_baggage", "baggage",
                                   "jaeger_keys", "jaeger_environ_keys", "_extract_pairs",
                                   "extract", "Propagator", "extract_read", "extraction_failed"};
    PyObject *propagator_type = NULL;
    PyObject **targets[] = {&py_composite_extract_dict, &slow, &x_baggage_keys[0],
                            &x_baggage_keys[1], &x_jaeger_keys, &x_jaeger_environ_keys,
                            &py_composite_extract_pairs, &py_propagator_extract,
                            &propagator_type, &py_extract_read, &py_extraction_failed};
    if (py_composite_extract_dict != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!propagation_ready()) {
        return NULL;
    }
    if ((s_keys == NULL && (s_keys = PyUnicode_InternFromString("keys")) == NULL) ||
        (s_isdisjoint == NULL && (s_isdisjoint = PyUnicode_InternFromString("isdisjoint")) == NULL) ||
        (s_issuperset == NULL && (s_issuperset = PyUnicode_InternFromString("issuperset")) == NULL) ||
        (s_dict_state == NULL && (s_dict_state = PyUnicode_InternFromString("_dict_state")) == NULL) ||
        take_names(names, needed, targets, 11) < 0) {
        return NULL;
    }
    PyObject *result = NULL, *functions = NULL;
    if (!PyTuple_CheckExact(x_jaeger_keys) || !PyTuple_CheckExact(x_jaeger_environ_keys) ||
        !PyType_Check(propagator_type)) {
        PyErr_SetString(PyExc_TypeError, "the Jaeger baggage keys are tuples, Propagator a class");
        goto done;
    }
    PyObject *python[] = {py_composite_extract_dict, py_composite_extract_pairs};
    functions = compiled_functions(composite_defs, 2, python, composite_docs,
                                   "tomograph.propagation.composite");
    if (functions == NULL) {
        goto done;
    }
    copy_doc_to(&propagator_extract_def, py_propagator_extract, &propagator_extract_doc);
    PyObject *method = PyDescr_NewMethod((PyTypeObject *)propagator_type, &propagator_extract_def);
    if (method != NULL) {
        result = PyTuple_Pack(3, PyTuple_GET_ITEM(functions, 0), PyTuple_GET_ITEM(functions, 1),
                              method);
        Py_DECREF(method);
    }
done:
    Py_XDECREF(functions);
    Py_XDECREF(propagator_type);
    if (result == NULL) {
        Py_CLEAR(py_composite_extract_dict); /* set up again by a later call, if any */
    }
    return result;
}

static PyMethodDef module_methods[] = {
    {"setup_context", setup_context, METH_VARARGS,
     "setup_context(TraceContext, new_context) -> the compiled new_context"},
    {"setup_w3c", setup_w3c, METH_O,
     "setup_w3c(names) -> (inject, extract, extract_dict) of the W3C format"},
    {"setup_b3", setup_b3, METH_O, "setup_b3(names) -> (inject, extract, extract_dict) of B3"},
    {"setup_baggage", setup_baggage, METH_O,
     "setup_baggage(names) -> (inject, extract_dict) of W3C baggage"},
    {"setup_carriers", setup_carriers, METH_O,
     "setup_carriers(names) -> (known_pairs,) of the header carriers"},
    {"setup_composite", setup_composite, METH_O,
     "setup_composite(names) -> (_extract_dict,) of the composite propagator"},
    {"setup", setup, METH_VARARGS,
     "setup(Span, names) -> (make_span, Tracer.span, __enter__, __exit__, finish)"},
    {"use_tracer_layout", use_tracer_layout, METH_O,
     "use_tracer_layout(Tracer): read a Tracer's fields at their offsets."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tomograph._speedups",
    "The span and header hot paths in C (optional; see tomograph.span and docs/core.md).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module_def);
}
