// Calls the registered solid_ext ops through the dispatcher (as any C++ user of
// libtorch would) and compares them with plain ATen expressions, once per CPU
// kernel variant this machine can run.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <limits>
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

// The op raises a c10::Error whose message contains `op` and `name`.
template <typename F>
void expect_error(const std::string& what, F&& f, const std::string& op,
                  const std::string& name) {
  bool ok = false;
  std::string msg = "no error";
  try {
    f();
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
    ok = msg.find(op) != std::string::npos && msg.find(name) != std::string::npos;
  }
  check(ok, "rejects " + what + (ok ? "" : ": " + msg));
}

// Every op checks its own arguments before touching memory (csrc/validate.h): an
// undersized optional tensor, an out-of-range code index, a bad tau or a grad of the
// wrong shape raises, naming the argument.
void test_argument_checks() {
  auto& dispatcher = c10::Dispatcher::singleton();
  auto dl = dispatcher.findSchemaOrThrow("solid_ext::dynamic_linear", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                  const c10::optional<at::Tensor>&,
                                  const c10::optional<at::Tensor>&,
                                  const c10::optional<at::Tensor>&, double)>();
  auto dlb = dispatcher.findSchemaOrThrow("solid_ext::dynamic_linear_backward", "")
                 .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&, double,
                     bool, bool, bool)>();
  auto cqb = dispatcher.findSchemaOrThrow("solid_ext::codebook_quantize_backward", "")
                 .typed<std::tuple<at::Tensor, at::Tensor>(
                     const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                     const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>();
  auto cq = dispatcher.findSchemaOrThrow("solid_ext::codebook_quantize", "")
                .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                      const at::Tensor&, bool)>();
  const auto none = c10::optional<at::Tensor>();
  at::Tensor x = at::randn({3, 2, 4}), w = at::randn({3, 4, 5}), b = at::randn({3, 5});
  at::Tensor bw = at::randn({3, 4, 5}), g = at::randn({3, 2, 5});
  const std::string DL = "dynamic_linear", DLB = "dynamic_linear_backward";
  expect_error("an undersized bias", [&] { dl.call(x, w, b.narrow(1, 0, 2), none, none, 0.1); },
               DL, "bias");
  expect_error("an undersized branch_weight",
               [&] { dl.call(x, w, none, bw.narrow(0, 0, 1), none, 0.1); }, DL, "branch_weight");
  expect_error("an undersized branch_bias",
               [&] { dl.call(x, w, none, none, b.narrow(1, 0, 1), 0.1); }, DL, "branch_bias");
  expect_error("a bias of another dtype",
               [&] { dl.call(x, w, b.to(at::kDouble), none, none, 0.1); }, DL, "bias");
  expect_error("x and weight disagreeing on N_in",
               [&] { dl.call(x.narrow(2, 0, 3), w, none, none, none, 0.1); }, DL, "x");
  expect_error("a NaN tau", [&] { dl.call(x, w, none, none, none, std::nan("")); }, DL, "tau");
  expect_error("a negative tau", [&] { dl.call(x, w, none, none, none, -1.0); }, DL, "tau");
  expect_error("a grad of the wrong shape",
               [&] { dlb.call(g.narrow(1, 0, 1), x, w, none, none, 0.1, true, true, true); },
               DLB, "grad");
  expect_error("an undersized branch_bias in the backward",
               [&] { dlb.call(g, x, w, none, b.narrow(0, 0, 2), 0.1, true, true, true); }, DLB,
               "branch_bias");
  at::Tensor z = at::randn({6, 3}), c = at::randn({4, 3});
  at::Tensor idx = at::arange(6, at::kLong).remainder(4);
  const std::string CQB = "codebook_quantize_backward";
  expect_error("an index past K", [&] { cqb.call(none, none, z, c, idx + 1, false); }, CQB,
               "indices");
  expect_error("a negative index", [&] { cqb.call(none, none, z, c, idx - 1, false); }, CQB,
               "indices");
  expect_error("int32 indices", [&] { cqb.call(none, none, z, c, idx.to(at::kInt), false); },
               CQB, "indices");
  expect_error("an undersized grad_q",
               [&] { cqb.call(z.narrow(1, 0, 1), none, z, c, idx, false); }, CQB, "grad_q");
  expect_error("an empty codebook", [&] { cq.call(z, c.narrow(0, 0, 0), false); },
               "codebook_quantize", "codebook");
  // Valid edge cases stay accepted: D = 0 takes code 0 at distance 0.
  auto [q0, sq0, idx0] = cq.call(at::randn({5, 0}), at::randn({3, 0}), false);
  check(q0.sizes() == at::IntArrayRef({5, 0}) && (idx0 == 0).all().item<bool>() &&
            (sq0 == 0).all().item<bool>(),
        "codebook_quantize with D = 0");
}

// A zero sq_dist gradient contributes exactly zero, also for an infinite z.
void test_zero_grad_sq_with_infinite_z() {
  auto cqb = c10::Dispatcher::singleton()
                 .findSchemaOrThrow("solid_ext::codebook_quantize_backward", "")
                 .typed<std::tuple<at::Tensor, at::Tensor>(
                     const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
                     const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>();
  at::Tensor z = at::randn({4, 3}), c = at::randn({2, 3});
  z.select(0, 1).fill_(std::numeric_limits<float>::infinity());
  at::Tensor idx = at::zeros({4}, at::kLong), gq = at::ones({4, 3});
  auto [gz, gc] = cqb.call(gq, at::zeros({4}), z, c, idx, true);
  check(gz.equal(gq) && at::isfinite(gc).all().item<bool>(),
        "zero grad_sq adds nothing where z is infinite");
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
  test_argument_checks();
  test_zero_grad_sq_with_infinite_z();
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
