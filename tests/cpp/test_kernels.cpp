// Calls the registered solid_ext ops through the dispatcher (as any C++ user of
// libtorch would) and compares them with plain ATen expressions, once per CPU
// kernel variant this machine can run.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <string>

#include "cpu/isa.h"

namespace {
int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return a.sizes() == b.sizes() && (a - b).abs().max().item<double>() <= tol;
}

void test_dynamic_linear(at::ScalarType dtype, double tol) {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("solid_ext::dynamic_linear", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                  const c10::optional<at::Tensor>&,
                                  const c10::optional<at::Tensor>&,
                                  const c10::optional<at::Tensor>&, double)>();
  const double tau = 0.05;
  auto opts = at::TensorOptions().dtype(dtype);
  // Odd sizes: none is a multiple of a SIMD width.
  at::Tensor x = at::randn({7, 3, 13}, opts), w = at::randn({7, 13, 19}, opts);
  at::Tensor b = at::randn({7, 19}, opts);
  at::Tensor bw = at::randn({7, 13, 19}, opts) * 0.1, bb = at::randn({7, 19}, opts) * 0.1;
  at::Tensor y = op.call(x, w, b, bw, bb, tau);
  at::Tensor expect =
      at::bmm(x, w + bw.clamp(-tau, tau)) + (b + bb.clamp(-tau, tau)).unsqueeze(1);
  check(close(y, expect, tol), std::string("dynamic_linear ") + at::toString(dtype));
  at::Tensor y2 = op.call(x, w, c10::nullopt, c10::nullopt, c10::nullopt, tau);
  check(close(y2, at::bmm(x, w), tol),
        std::string("dynamic_linear without bias/branch ") + at::toString(dtype));
}

void test_codebook_quantize(at::ScalarType dtype) {
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("solid_ext::codebook_quantize", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                    const at::Tensor&, const at::Tensor&, bool)>();
  auto opts = at::TensorOptions().dtype(dtype);
  at::Tensor z = at::randn({101, 17}, opts), c = at::randn({67, 17}, opts);
  auto [q, sq, idx] = op.call(z, c, false);
  at::Tensor dist = (z.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1);
  at::Tensor expect = std::get<1>(dist.min(1));
  check(idx.equal(expect), std::string("codebook_quantize indices ") + at::toString(dtype));
  check(q.equal(c.index_select(0, idx)),
        std::string("codebook_quantize codes ") + at::toString(dtype));
  check(close(sq, std::get<0>(dist.min(1)), dtype == at::kFloat ? 1e-4 : 1e-10),
        std::string("codebook_quantize sq_dist ") + at::toString(dtype));
}

void test_isa_selection() {
  namespace cpu = solid_ext::cpu;
  const auto supported = cpu::isas_supported();
  check(!supported.empty() && supported.back() == "baseline", "baseline is always supported");
  bool threw = false;
  try {
    cpu::set_isa("sse9");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    threw = msg.find("sse9") != std::string::npos && msg.find("baseline") != std::string::npos;
  }
  check(threw, "an unknown variant raises, naming it and the supported ones");
}
}  // namespace

int main() {
  test_isa_selection();
  for (const auto& isa : solid_ext::cpu::isas_supported()) {
    solid_ext::cpu::set_isa(isa);
    std::printf("-- CPU kernels: %s\n", solid_ext::cpu::active_isa().c_str());
    at::manual_seed(0);
    test_dynamic_linear(at::kFloat, 1e-4);
    test_dynamic_linear(at::kDouble, 1e-10);
    test_codebook_quantize(at::kFloat);
    test_codebook_quantize(at::kDouble);
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
