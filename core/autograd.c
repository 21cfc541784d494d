/* autograd.c — the autograd engine: grad mode, nodes and their lifetime, and the backward pass
 * (reverse topological order over the nodes reachable from the roots, gradients accumulated per
 * node and into leaves, or captured for mf_grad). The gradient rules are in grad.c. */
#include <stdlib.h>
#include <string.h>

#include "autograd.h"

static _Thread_local bool grad_disabled;

bool mf_grad_enabled(void) { return !grad_disabled; }

bool mf_set_grad_enabled(bool on) {
  bool prev = !grad_disabled;
  grad_disabled = !on;
  return prev;
}

bool mf_requires_grad(const mf_tensor *t) {
  return t && (t->grad_fn || (t->flags & MF_TENSOR_REQUIRES_GRAD));
}

bool mf_is_leaf(const mf_tensor *t) { return t->grad_fn == NULL; }

const char *mf_grad_fn_name(const mf_tensor *t) { return t->grad_fn ? t->grad_fn->name : NULL; }

mf_status mf_set_requires_grad(mf_tensor *t, bool on) {
  if (t->grad_fn) {
    if (on) return MF_OK;
    return mf_fail(MF_ERR_ARG, "requires_grad: only a leaf's flag can be cleared; use detach()");
  }
  if (on && !mf_dtype_is_float(t->dtype))
    return mf_fail(MF_ERR_DTYPE, "requires_grad: only floating tensors can require grad, got %s",
                   mf_dtype_name(t->dtype));
  if (on)
    t->flags |= MF_TENSOR_REQUIRES_GRAD;
  else
    t->flags &= ~(unsigned)MF_TENSOR_REQUIRES_GRAD;
  return MF_OK;
}

mf_status mf_detach(const mf_tensor *t, mf_tensor **out) {
  *out = mf_tensor_wrap(t->storage, t->dtype, t->ndim, t->shape, t->stride, t->offset);
  return *out ? MF_OK : MF_ERR_MEMORY;
}

mf_status mf_set_grad(mf_tensor *t, mf_tensor *grad) {
  if (grad) {
    bool same = grad->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = grad->shape[d] == t->shape[d];
    if (!same) {
      char a[96], b[96];
      return mf_fail(MF_ERR_SHAPE, "grad: a gradient of shape %s for a tensor of shape %s",
                     mf_shape_str(grad, a, sizeof a), mf_shape_str(t, b, sizeof b));
    }
    MF_TRY(mf_same_device("grad", t, grad));
    if (grad->dtype != t->dtype)
      return mf_fail(MF_ERR_DTYPE, "grad: a %s gradient for a %s tensor",
                     mf_dtype_name(grad->dtype), mf_dtype_name(t->dtype));
  }
  /* Headers are refcounted, so t->grad must not lead back to t: t itself (x.grad = x), a tensor
   * whose own .grad is t (y.grad = x after x.grad = y) or a result whose graph saved t
   * (x.grad = x * 2) would make a cycle that is never freed. Such a gradient is stored as a
   * plain header over the same storage (its values, without its grad and graph). */
  mf_tensor *g = grad;
  if (grad && (grad == t || grad->grad || grad->grad_fn))
    MF_TRY(mf_detach(grad, &g));
  else
    mf_retain(g);
  mf_release(t->grad);
  t->grad = g;
  return MF_OK;
}

mf_status mf_ag_check_inplace(const char *op, const mf_tensor *t) {
  if (!grad_disabled && mf_requires_grad(t))
    return mf_fail(MF_ERR_ARG,
                   "%s: a tensor that requires grad cannot be modified in place (use "
                   "mf.no_grad or detach())",
                   op);
  return MF_OK;
}

/* ---- nodes -------------------------------------------------------------------------------- */

mf_node *mf_ag_begin(const char *name, mf_backward_fn fn, int nin, const mf_tensor *const *in,
                     mf_status *st) {
  *st = MF_OK;
  if (grad_disabled) return NULL;
  bool any = false;
  for (int i = 0; i < nin; i++) any |= in[i] && mf_requires_grad(in[i]);
  if (!any) return NULL;
  mf_node *n = calloc(1, sizeof *n + (size_t)nin * sizeof(mf_edge));
  if (!n) {
    *st = mf_fail(MF_ERR_MEMORY, "%s: out of memory recording the autograd node", name);
    return NULL;
  }
  n->refcount = 1;
  n->name = name;
  n->backward = fn;
  n->nin = nin;
  for (int i = 0; i < nin; i++) {
    const mf_tensor *t = in[i];
    mf_edge *e = &n->in[i];
    if (!t) continue;
    e->ndim = t->ndim;
    memcpy(e->shape, t->shape, sizeof t->shape);
    e->dtype = t->dtype;
    e->device = t->storage->device;
    if (t->grad_fn) {
      e->next = t->grad_fn;
      t->grad_fn->refcount++;
      e->needs = true;
    } else if (t->flags & MF_TENSOR_REQUIRES_GRAD) {
      e->leaf = mf_retain((mf_tensor *)t);
      e->needs = true;
    }
  }
  return n;
}

mf_status mf_ag_save(mf_node *n, int i, const mf_tensor *t) {
  n->saved[i] = mf_retain((mf_tensor *)t);
  if (t) n->saved_version[i] = t->storage->version;
  return MF_OK;
}

mf_status mf_ag_save_output(mf_node *n, int i, const mf_tensor *out) {
  n->saved_version[i] = out->storage->version;
  return mf_detach(out, &n->saved[i]);
}

/* A rule computed from a saved tensor that was written in place since would give wrong
 * gradients without a word (labels refilled, a weight stepped before the backward). */
static mf_status check_saved(const mf_node *n) {
  for (int i = 0; i < MF_AG_MAX_SAVED; i++) {
    const mf_tensor *t = n->saved[i];
    if (t && t->storage->version != n->saved_version[i])
      return mf_fail(MF_ERR_ARG,
                     "backward: a tensor that %s saved for its gradient was modified in place "
                     "since (by copy_, fill_, zero_ or an optimizer step: version %u, now %u); "
                     "modify a clone() instead, or run the backward first",
                     n->name, n->saved_version[i], t->storage->version);
  }
  return MF_OK;
}

mf_status mf_ag_saved_output(mf_node *n, int i, mf_tensor **out) {
  const mf_tensor *y = n->saved[i];
  if (grad_disabled) {
    *out = mf_retain((mf_tensor *)y);
    return MF_OK;
  }
  /* The new tensor holds the node (no cycle: the node holds only the detached alias); nodes
   * recorded from it point back at n, as nodes recorded from the op's output would. */
  MF_TRY(mf_detach(y, out));
  (*out)->grad_fn = n;
  n->refcount++;
  return MF_OK;
}

void mf_ag_attach(mf_node *n, mf_tensor *out) { out->grad_fn = n; }

void mf_ag_abort(mf_node *n) {
  if (n) mf_ag_node_release(n);
}

/* Releasing a node may release tensors that release their nodes: a work list instead of
 * recursion keeps long chains (thousands of steps) off the C stack. */
static _Thread_local mf_node **pending;
static _Thread_local int npending, cap_pending;
static _Thread_local bool draining;

static void free_saved(mf_node *n) {
  for (int i = 0; i < MF_AG_MAX_SAVED; i++) MF_DROP(n->saved[i]);
  n->freed = true;
}

void mf_ag_node_release(mf_node *n) {
  if (--n->refcount > 0) return;
  if (npending == cap_pending) {
    int cap = cap_pending ? 2 * cap_pending : 64;
    mf_node **p = realloc(pending, (size_t)cap * sizeof *p);
    if (!p) { /* cannot defer: release in place (recursion) */
      free_saved(n);
      for (int i = 0; i < n->nin; i++) {
        mf_release(n->in[i].leaf);
        if (n->in[i].next) mf_ag_node_release(n->in[i].next);
      }
      mf_release(n->grad);
      free(n);
      return;
    }
    pending = p, cap_pending = cap;
  }
  pending[npending++] = n;
  if (draining) return;
  draining = true;
  while (npending) {
    mf_node *m = pending[--npending];
    free_saved(m);
    mf_release(m->grad);
    for (int i = 0; i < m->nin; i++) {
      mf_release(m->in[i].leaf);
      if (m->in[i].next) mf_ag_node_release(m->in[i].next);
    }
    free(m);
  }
  draining = false;
}

/* Called by mf_release when a tensor with a grad_fn dies. */
void mf_autograd_release_node(struct mf_node *n) { mf_ag_node_release(n); }

/* ---- the backward pass ---------------------------------------------------------------------- */

typedef struct capture {
  const mf_tensor *input; /* a leaf or a non-leaf whose node's total gradient is wanted */
  mf_tensor *grad;
} capture;

typedef struct engine {
  mf_node **order; /* every reachable node */
  int n, cap;
  unsigned visit;
  capture *caps;
  int ncaps;
  bool retain, create;
} engine;

static unsigned visit_counter;

static mf_status push_node(engine *e, mf_node *n) {
  if (e->n == e->cap) {
    int cap = e->cap ? 2 * e->cap : 64;
    mf_node **o = realloc(e->order, (size_t)cap * sizeof *o);
    if (!o) return mf_fail(MF_ERR_MEMORY, "backward: out of memory");
    e->order = o, e->cap = cap;
  }
  e->order[e->n++] = n;
  return MF_OK;
}

/* Collects the nodes reachable from the roots (iteratively) and counts each one's dependencies:
 * how many edges from reachable nodes point at it. */
static mf_status collect(engine *e, int nroots, mf_node *const *roots) {
  e->visit = __atomic_add_fetch(&visit_counter, 1, __ATOMIC_RELAXED);
  for (int r = 0; r < nroots; r++) {
    if (!roots[r] || roots[r]->visit == e->visit) continue;
    roots[r]->visit = e->visit;
    roots[r]->deps = 0;
    MF_TRY(push_node(e, roots[r]));
  }
  for (int k = 0; k < e->n; k++) {
    mf_node *n = e->order[k];
    for (int i = 0; i < n->nin; i++) {
      mf_node *m = n->in[i].next;
      if (!m) continue;
      if (m->visit != e->visit) {
        m->visit = e->visit;
        m->deps = 0;
        MF_TRY(push_node(e, m));
      }
      m->deps++;
    }
  }
  return MF_OK;
}

/* acc = acc + g (acc NULL: g itself). */
static mf_status accumulate(mf_tensor **acc, mf_tensor *g) {
  if (!*acc) {
    *acc = mf_retain(g);
    return MF_OK;
  }
  mf_tensor *sum;
  MF_TRY(mf_add(*acc, g, &sum));
  mf_release(*acc);
  *acc = sum;
  return MF_OK;
}

/* Brings a rule's result to the input's dtype and device, and checks its shape. */
static mf_status conform(mf_node *n, int i, mf_tensor **g) {
  mf_tensor *t = *g, *c = NULL;
  const mf_edge *e = &n->in[i];
  bool same = t->ndim == e->ndim;
  for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == e->shape[d];
  if (!same) {
    char a[96], b[96];
    return mf_fail(MF_ERR_SHAPE,
                   "backward: %s gave a gradient of shape %s for an input of shape %s", n->name,
                   mf_shape_str(t, a, sizeof a), mf_shape_fmt(e->ndim, e->shape, b, sizeof b));
  }
  if (t->storage->device != e->device) MF_TRY(mf_to_device(t, e->device, &c));
  if (t->dtype != e->dtype) {
    mf_tensor *d;
    mf_status s = mf_cast(c ? c : t, e->dtype, &d);
    mf_release(c);
    if (s) return s;
    c = d;
  }
  if (c) {
    mf_release(t);
    *g = c;
  }
  return MF_OK;
}

static capture *find_capture(engine *e, const mf_tensor *t) {
  for (int k = 0; k < e->ncaps; k++)
    if (e->caps[k].input == t) return &e->caps[k];
  return NULL;
}

/* Gives a leaf its share: into a capture for mf_grad, else into leaf->grad (contiguous). */
static mf_status to_leaf(engine *e, mf_tensor *leaf, mf_tensor *g) {
  if (e->caps) {
    capture *c = find_capture(e, leaf);
    return c ? accumulate(&c->grad, g) : MF_OK;
  }
  /* A leaf's grad is its own contiguous tensor: the rule's result when nothing else holds it,
   * else a copy (add() hands the same gradient to both inputs). */
  mf_tensor *cg = NULL;
  bool owned = g->refcount == 1 && g->storage->refcount == 1 && mf_is_contiguous(g);
  if (owned || leaf->grad)
    cg = mf_retain(g);
  else
    MF_TRY(mf_cast(g, g->dtype, &cg));
  mf_status s = accumulate(&leaf->grad, cg);
  mf_release(cg);
  return s;
}

static mf_status run_node(engine *en, mf_node *n, mf_node **ready, int *nready) {
  if (n->freed)
    return mf_fail(MF_ERR_ARG,
                   "backward: the graph through %s was already freed by an earlier backward; "
                   "pass retain_graph to backward twice",
                   n->name);
  for (int k = 0; k < en->ncaps; k++)
    if (en->caps[k].input->grad_fn == n) MF_TRY(accumulate(&en->caps[k].grad, n->grad));
  mf_tensor *one[4] = {NULL}, **gin = n->nin <= 4 ? one : calloc((size_t)n->nin, sizeof *gin);
  if (!gin) return mf_fail(MF_ERR_MEMORY, "backward: out of memory");
  mf_status s = n->grad ? check_saved(n) : MF_OK; /* else no gradient arrived */
  if (!s && n->grad) s = n->backward(n, n->grad, gin);
  /* done with: a view rule's result (transpose, reshape) then holds its storage alone, so a leaf
   * takes it without a copy (a Linear layer's weight gradient) */
  MF_DROP(n->grad);
  for (int i = 0; i < n->nin && !s; i++) {
    mf_edge *e = &n->in[i];
    if (!gin[i] || !e->needs) continue;
    s = conform(n, i, &gin[i]);
    if (s) break;
    if (e->next)
      s = accumulate(&e->next->grad, gin[i]);
    else if (e->leaf)
      s = to_leaf(en, e->leaf, gin[i]);
  }
  for (int i = 0; i < n->nin; i++) mf_release(gin[i]);
  if (gin != one) free(gin);
  if (s) return s;
  if (!en->retain) free_saved(n);
  for (int i = 0; i < n->nin; i++) {
    mf_node *m = n->in[i].next;
    if (m && --m->deps == 0) ready[(*nready)++] = m;
  }
  return MF_OK;
}

/* Runs the pass from roots with their gradients. */
static mf_status run_backward(engine *e, int nroots, mf_node *const *roots,
                              mf_tensor *const *grads) {
  MF_TRY(collect(e, nroots, roots));
  mf_status s = MF_OK;
  for (int r = 0; r < nroots && !s; r++)
    if (roots[r]) s = accumulate(&roots[r]->grad, grads[r]);
  mf_node **ready = malloc((size_t)(e->n ? e->n : 1) * sizeof *ready);
  if (!ready) s = mf_fail(MF_ERR_MEMORY, "backward: out of memory");
  int nready = 0;
  for (int k = 0; k < e->n && !s; k++)
    if (e->order[k]->deps == 0) ready[nready++] = e->order[k];
  bool prev = mf_set_grad_enabled(e->create);
  while (nready && !s) {
    mf_node *n = ready[--nready];
    s = run_node(e, n, ready, &nready);
  }
  mf_set_grad_enabled(prev);
  for (int k = 0; k < e->n; k++) MF_DROP(e->order[k]->grad); /* after an error */
  free(ready);
  free(e->order);
  return s;
}

/* The gradient that starts a pass: given, or ones for a one-element root. */
/* The gradient that starts a pass from root: grad (checked, brought to root's dtype) or ones for a
 * one-element root. Unless the pass creates a graph, a seed that requires grad is detached: it
 * flows unchanged into leaves' .grad (add's rule passes it on), and a seed whose graph saved the
 * leaf (x:backward(x * 2)) would make a reference cycle x -> grad -> node -> x, never freed. */
static mf_status seed_grad(const char *op, mf_tensor *root, const mf_tensor *grad, bool create,
                           mf_tensor **out) {
  if (grad && !create && mf_requires_grad(grad)) {
    mf_tensor *d;
    MF_TRY(mf_detach(grad, &d));
    mf_status s = seed_grad(op, root, d, create, out);
    mf_release(d);
    return s;
  }
  char a[96], b[96];
  if (grad) {
    bool same = grad->ndim == root->ndim;
    for (int d = 0; same && d < root->ndim; d++) same = grad->shape[d] == root->shape[d];
    if (!same)
      return mf_fail(MF_ERR_SHAPE, "%s: the gradient has shape %s but the tensor %s", op,
                     mf_shape_str(grad, a, sizeof a), mf_shape_str(root, b, sizeof b));
    /* the seed flows into the rules and, for a leaf root, becomes its .grad: it must be on the
     * tensor's device and is brought to its dtype (as the rules' results are by conform) */
    if (grad->storage->device != root->storage->device)
      return mf_fail(MF_ERR_DEVICE, "%s: the gradient is on %s but the tensor on %s", op,
                     grad->storage->device->name, root->storage->device->name);
    if (grad->dtype != root->dtype) return mf_cast(grad, root->dtype, out);
    *out = mf_retain((mf_tensor *)grad);
    return MF_OK;
  }
  if (mf_numel(root) != 1)
    return mf_fail(MF_ERR_SHAPE,
                   "%s: a gradient can be implied only for a one-element tensor, not %s; "
                   "pass one",
                   op, mf_shape_str(root, a, sizeof a));
  return mf_ones(root->ndim, root->shape, root->dtype, root->storage->device, out);
}

mf_status mf_backward(mf_tensor *root, const mf_tensor *grad, bool retain_graph) {
  if (!root) return mf_fail(MF_ERR_ARG, "backward: no tensor (NULL)");
  if (!mf_requires_grad(root))
    return mf_fail(MF_ERR_ARG, "backward: the tensor does not require grad and has no grad_fn");
  mf_tensor *g;
  MF_TRY(seed_grad("backward", root, grad, false, &g));
  engine e = {.retain = retain_graph};
  mf_status s;
  if (!root->grad_fn)
    s = to_leaf(&e, root, g);
  else
    s = run_backward(&e, 1, &root->grad_fn, &g);
  mf_release(g);
  return s;
}

mf_status mf_grad(int nout, mf_tensor *const *outputs, mf_tensor *const *grad_outputs, int nin,
                  mf_tensor *const *inputs, bool retain_graph, bool create_graph,
                  mf_tensor **grads) {
  if (nin < 1 || nout < 1)
    return mf_fail(MF_ERR_ARG, "grad: needs at least one output and one input");
  for (int i = 0; i < nin; i++) grads[i] = NULL;
  for (int i = 0; i < nin; i++)
    if (!mf_requires_grad(inputs[i]))
      return mf_fail(MF_ERR_ARG, "grad: input %d does not require grad", i + 1);
  capture *caps = calloc((size_t)nin, sizeof *caps);
  mf_node **roots = calloc((size_t)nout, sizeof *roots);
  mf_tensor **seeds = calloc((size_t)nout, sizeof *seeds);
  mf_status s = caps && roots && seeds ? MF_OK : mf_fail(MF_ERR_MEMORY, "grad: out of memory");
  for (int i = 0; i < nin && !s; i++) caps[i].input = inputs[i];
  engine e = {
      .caps = caps, .ncaps = nin, .retain = retain_graph || create_graph, .create = create_graph};
  for (int r = 0; r < nout && !s; r++) {
    if (!mf_requires_grad(outputs[r])) {
      s = mf_fail(MF_ERR_ARG, "grad: output %d does not require grad", r + 1);
      break;
    }
    s = seed_grad("grad", outputs[r], grad_outputs ? grad_outputs[r] : NULL, create_graph,
                  &seeds[r]);
    roots[r] = outputs[r]->grad_fn;
    if (!s && !roots[r]) { /* an output that is itself a leaf input */
      capture *c = find_capture(&e, outputs[r]);
      if (c) s = accumulate(&c->grad, seeds[r]);
    }
  }
  if (!s) s = run_backward(&e, nout, roots, seeds);
  for (int i = 0; i < nin && caps; i++) {
    if (!s)
      grads[i] = caps[i].grad;
    else
      mf_release(caps[i].grad);
  }
  for (int r = 0; r < nout && seeds; r++) mf_release(seeds[r]);
  free(caps);
  free(roots);
  free(seeds);
  return s;
}
