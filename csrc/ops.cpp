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
}
