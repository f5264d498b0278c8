// Fused bias + activation + gain + clamp for torch_utils/ops/bias_act.py (StyleGAN2-ADA `bias_act` semantics).
#pragma once
#include <ATen/core/Tensor.h>

// mode 0: y = clamp(gain * act(x + b))                     (x = input)
// mode 1: dx = g1 * gain * act'(s) * mask                  (x = input, or the output y when ref_is_y)
// mode 2: ddx = g2 * g1 * gain * act''(s) * mask           (x = input, g1 = upstream grad, g2 = grad of dx)
// with s = x + b and mask = 1 where the clamp is inactive. Activation indices follow activation_funcs[...].cuda_idx.
at::Tensor bias_act_cuda(const at::Tensor& x, const at::Tensor& b, const at::Tensor& g1, const at::Tensor& g2,
                         int64_t mode, int64_t dim, int64_t act, double alpha, double gain, double clamp,
                         bool ref_is_y);
