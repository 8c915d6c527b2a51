// Op schemas of the solid_ext library: the one place they are declared.
// CPU kernels live in cpu/*.cpp, CUDA kernels in cuda/*.cu; each registers itself
// with TORCH_LIBRARY_IMPL for its dispatch key. Fake kernels and autograd are
// registered from Python (solid_ext/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(solid_ext, m) {
  m.def(
      "dynamic_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? branch_weight, "
      "Tensor? branch_bias, float tau) -> Tensor");
  m.def(
      "dynamic_linear_backward(Tensor grad, Tensor x, Tensor weight, "
      "Tensor? branch_weight, Tensor? branch_bias, float tau, bool need_dx, "
      "bool need_dw, bool need_dbw) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "generated_linear(Tensor x, Tensor cond, Tensor gen_weight, Tensor base, float? tau) "
      "-> Tensor");
  m.def(
      "generated_linear_backward(Tensor grad, Tensor x, Tensor cond, Tensor gen_weight, "
      "Tensor base, float? tau, bool need_dx, bool need_dcond, bool need_dgen, "
      "bool need_dbase) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "codebook_quantize(Tensor z, Tensor codebook, bool straight_through_codebook) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "codebook_quantize_backward(Tensor? grad_q, Tensor? grad_sq, Tensor z, "
      "Tensor codebook, Tensor indices, bool straight_through_codebook) "
      "-> (Tensor, Tensor)");
  // The item table: a fused row-wise optimizer step on the rows a batch touched (in
  // place), and the softmax cross-entropy over every item without the logits matrix.
  m.def(
      "sparse_row_update(Tensor(a!) weight, Tensor(b!) state1, Tensor(c!) state2, "
      "Tensor? indices, Tensor grad, str kind, float lr, float beta1, float beta2, "
      "float eps, float weight_decay, int step) -> ()");
  m.def(
      "item_softmax_xent(Tensor hidden, Tensor table, Tensor target, float label_smoothing, "
      "int chunk) -> (Tensor, Tensor)");
  m.def(
      "item_softmax_xent_backward(Tensor grad_loss, Tensor hidden, Tensor table, "
      "Tensor target, Tensor lse, float label_smoothing, int chunk, bool need_dhidden, "
      "bool need_dtable) -> (Tensor, Tensor)");
  // Top-k retrieval: the k best items of each query by inner product, without the
  // (B, N) score matrix.
  m.def("topk_scores(Tensor queries, Tensor table, int k, Tensor? exclude) -> (Tensor, Tensor)");
  // Full-ranking evaluation: each query's target's rank among all items, exactly.
  m.def("score_ranks(Tensor queries, Tensor table, Tensor target, Tensor? exclude) -> Tensor");
}
