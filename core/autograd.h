/* autograd.h — the autograd node and the recording calls the op front ends make.
 *
 * A node belongs to the one tensor it made (out->grad_fn). For each input it keeps where that
 * input's gradient goes: the input's own node (`next`), or the input itself when it is a leaf that
 * requires grad (`leaf`). It keeps the inputs' geometry (gradients must come back in that shape
 * and dtype), the tensors the rule needs (`saved`), and the op's parameters.
 *
 * Front ends call mf_ag_begin after computing a fresh output; it returns NULL when nothing needs
 * recording (grad mode off, or no input requires grad), so recording costs one branch otherwise.
 * Only primitive ops record: a composite (flatten = reshape, stack = unsqueeze + cat) is
 * differentiable through the primitives it calls.
 */
#ifndef MF_AUTOGRAD_H
#define MF_AUTOGRAD_H

#include "internal.h"

#define MF_AG_MAX_SAVED 4

typedef struct mf_node mf_node;

/* Computes the gradients of the node's inputs from gout (the gradient of its output). gin[i] may be
 * left NULL for an input that needs no gradient (n->in[i].needs false) or gets none. */
typedef mf_status (*mf_backward_fn)(mf_node *n, const mf_tensor *gout, mf_tensor **gin);

/* Where an input's gradient goes, and the geometry it must have. */
typedef struct mf_edge {
  mf_node *next;   /* the input's node (retained), or NULL */
  mf_tensor *leaf; /* the input itself when it is a leaf that requires grad (retained) */
  bool needs;
  int ndim;
  int64_t shape[MF_MAX_DIMS];
  mf_dtype dtype;
  mf_device *device;
} mf_edge;

struct mf_node {
  int refcount;
  const char *name;
  mf_backward_fn backward;
  mf_tensor *saved[MF_AG_MAX_SAVED]; /* retained; freed after a backward without retain_graph */
  unsigned saved_version[MF_AG_MAX_SAVED]; /* their storages' versions when saved */
  bool freed;                              /* saved tensors were freed */
  int64_t ip[MF_MAX_DIMS];
  double p[4];
  mf_pool2d_params pool;
  /* the backward pass's scratch */
  mf_tensor *grad;
  int deps;
  unsigned visit;
  int nin;
  mf_edge in[]; /* nin entries */
};

/* A node for an op with these inputs, or NULL when nothing requires recording. On allocation
 * failure returns NULL and sets *st. */
mf_node *mf_ag_begin(const char *name, mf_backward_fn fn, int nin, const mf_tensor *const *in,
                     mf_status *st);
/* Saves t (retained) in slot i. A tensor that is the node's own output must be saved with
 * mf_ag_save_output, which keeps a detached alias so that no reference cycle forms. */
mf_status mf_ag_save(mf_node *n, int i, const mf_tensor *t);
mf_status mf_ag_save_output(mf_node *n, int i, const mf_tensor *out);
/* The output saved in slot i, for a rule to use (release it after). While the backward records
 * (create_graph: grad mode is on inside a rule only then) it is the op's output connected to the
 * graph: a tensor on the same storage whose grad_fn is n itself, so that the gradient's graph
 * depends on the inputs through the output. Otherwise it is the detached alias (no extra work). */
mf_status mf_ag_saved_output(mf_node *n, int i, mf_tensor **out);
/* Makes n the out's grad_fn (taking over the reference from mf_ag_begin). out must be fresh. */
void mf_ag_attach(mf_node *n, mf_tensor *out);
/* Drops a node that was begun but not attached (an op failed after mf_ag_begin). */
void mf_ag_abort(mf_node *n);
void mf_ag_node_release(mf_node *n);

/* Records what each differentiable primitive needs (grad.c). Each returns MF_OK at once when no
 * input requires grad; `out` is the op's fresh result. */
mf_status mf_ag_binary(mf_op op, const mf_tensor *a, const mf_tensor *b, mf_tensor *out);
mf_status mf_ag_unary(mf_op op, const mf_tensor *x, mf_tensor *out, double lo, double hi);
mf_status mf_ag_where(const mf_tensor *cond, const mf_tensor *a, const mf_tensor *b,
                      mf_tensor *out);
mf_status mf_ag_cast(const mf_tensor *x, mf_tensor *out); /* dtype or device change, or a copy */
mf_status mf_ag_reshape(const mf_tensor *x, mf_tensor *out);
mf_status mf_ag_permute(const mf_tensor *x, const int *perm, mf_tensor *out);
/* narrow/select/slice: the output is x's [start, stop) step along dim, dim removed if select. */
mf_status mf_ag_slice(const mf_tensor *x, int dim, int64_t start, int64_t stop, int64_t step,
                      bool select, mf_tensor *out);
mf_status mf_ag_expand(const mf_tensor *x, mf_tensor *out);
mf_status mf_ag_cat(int n, mf_tensor *const *ts, int dim, mf_tensor *out);
mf_status mf_ag_reduce(mf_op op, const mf_tensor *x, int dim, bool keepdim, int correction,
                       mf_tensor *out);
mf_status mf_ag_matmul(const mf_tensor *a, const mf_tensor *b, mf_tensor *out);
mf_status mf_ag_conv2d(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b,
                       const mf_pool2d_params *p, mf_tensor *out);
mf_status mf_ag_max_pool2d(const mf_tensor *x, const mf_tensor *indices, mf_tensor *out);
mf_status mf_ag_avg_pool2d(const mf_tensor *x, const mf_pool2d_params *p, mf_tensor *out);
mf_status mf_ag_softmax(bool log, const mf_tensor *x, int dim, mf_tensor *out);
/* Training: stats = the forward's save_stats (2, C) {mean, invstd}, running_var NULL. Inference:
 * stats = running_mean and running_var (C), of which the node keeps copies (later training steps
 * overwrite the running tensors in place). */
mf_status mf_ag_batch_norm(const mf_tensor *x, const mf_tensor *weight, const mf_tensor *bias,
                           bool training, const mf_tensor *stats, const mf_tensor *running_var,
                           double eps, mf_tensor *out);
mf_status mf_ag_gather(const mf_tensor *x, int dim, const mf_tensor *index, int64_t base,
                       mf_tensor *out);
mf_status mf_ag_cross_entropy(const mf_tensor *x, const mf_tensor *target, const mf_tensor *lse,
                              int64_t base, double eps, mf_tensor *out);

/* The sum of g over the dims that were broadcast to reach g's shape from (ndim, shape). */
mf_status mf_sum_to_shape(const mf_tensor *g, int ndim, const int64_t *shape, mf_tensor **out);

/* Passes on the status of recording an op's gradient rule, dropping the op's result on failure. */
static inline mf_status mf_ag_keep(mf_status s, mf_tensor **out) {
  if (s) MF_DROP(*out);
  return s;
}

/* Fails when t requires grad and grad mode is on (for in-place writes). */
mf_status mf_ag_check_inplace(const char *op, const mf_tensor *t);

#endif
