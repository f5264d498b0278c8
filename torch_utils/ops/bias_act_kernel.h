// The bias_act kernel itself (included by bias_act.cu). Written against the CUDA keywords only, so that a test
// can also compile it for the host (tests/torch_utils/ops/kernel_host_harness.cpp) and check it on CPU.
#pragma once
#include <ATen/OpMathType.h>

#include <cmath>
#include <cstdint>

namespace bias_act_kernel {

enum Activation { kLinear = 1, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

__device__ __forceinline__ float exp_(float v) { return expf(v); }
__device__ __forceinline__ double exp_(double v) { return exp(v); }
__device__ __forceinline__ float expm1_(float v) { return expm1f(v); }
__device__ __forceinline__ double expm1_(double v) { return expm1(v); }
__device__ __forceinline__ float log1p_(float v) { return log1pf(v); }
__device__ __forceinline__ double log1p_(double v) { return log1p(v); }
__device__ __forceinline__ float tanh_(float v) { return tanhf(v); }
__device__ __forceinline__ float abs_(float v) { return fabsf(v); }
__device__ __forceinline__ double abs_(double v) { return fabs(v); }
__device__ __forceinline__ double tanh_(double v) { return tanh(v); }

template <typename T>
__device__ __forceinline__ T sigmoid_(T v) { return T(1) / (T(1) + exp_(-v)); }

// f(s), f'(s), f''(s) of activation `act`; `order` says how many of them the caller needs (0, 1 or 2).
template <typename T>
__device__ __forceinline__ void activation(int act, T s, T alpha, int order, T& f, T& d1, T& d2) {
    const T selu_scale = T(1.0507009873554804934193349852946);
    const T selu_alpha = T(1.6732632423543772848170429916717);
    d1 = T(1);
    d2 = T(0);
    switch (act) {
    case kRelu:
        f = s > T(0) ? s : T(0);
        d1 = s > T(0) ? T(1) : T(0);
        break;
    case kLrelu:
        f = s > T(0) ? s : s * alpha;
        d1 = s > T(0) ? T(1) : alpha;
        break;
    case kTanh:
        f = tanh_(s);
        d1 = T(1) - f * f;
        d2 = T(-2) * f * d1;
        break;
    case kSigmoid: {
        f = sigmoid_(s);
        d1 = f * (T(1) - f);
        d2 = d1 * (T(1) - T(2) * f);
        break;
    }
    case kElu:
        f = s > T(0) ? s : expm1_(s);
        d1 = s > T(0) ? T(1) : exp_(s);
        d2 = s > T(0) ? T(0) : exp_(s);
        break;
    case kSelu:
        f = s > T(0) ? selu_scale * s : selu_scale * selu_alpha * expm1_(s);
        d1 = s > T(0) ? selu_scale : selu_scale * selu_alpha * exp_(s);
        d2 = s > T(0) ? T(0) : selu_scale * selu_alpha * exp_(s);
        break;
    case kSoftplus: {
        const T sg = sigmoid_(s);
        f = s > T(20) ? s : log1p_(exp_(s));
        d1 = s > T(20) ? T(1) : sg;
        d2 = s > T(20) ? T(0) : sg * (T(1) - sg);
        break;
    }
    case kSwish: {
        const T sg = sigmoid_(s);
        const T dsg = sg * (T(1) - sg);
        f = s * sg;
        d1 = sg + s * dsg;
        d2 = dsg * (T(2) + s * (T(1) - T(2) * sg));
        break;
    }
    default:  // kLinear
        f = s;
        break;
    }
}

template <typename scalar_t>
__global__ void bias_act_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, const scalar_t* __restrict__ g1,
                                const scalar_t* __restrict__ g2, int64_t numel, int64_t stride_dim, int64_t size_dim,
                                int mode, int act, at::opmath_type<scalar_t> alpha, at::opmath_type<scalar_t> gain,
                                at::opmath_type<scalar_t> clamp, bool ref_is_y) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += step) {
        const acc_t v = static_cast<acc_t>(x[i]);
        if (ref_is_y) {
            // Mode 1 from the clamped output y (linear, ReLU, leaky ReLU with gain > 0 and alpha >= 0):
            // sign(y) = sign(s), and |y| < clamp where the clamp let the value through.
            // A clamped output holds the clamp rounded to scalar_t, so that is what it is compared with.
            acc_t d = (act == kLinear || v > acc_t(0)) ? acc_t(1) : (act == kLrelu ? alpha : acc_t(0));
            if (clamp >= acc_t(0) && !(abs_(v) < static_cast<acc_t>(static_cast<scalar_t>(clamp))))
                d = acc_t(0);
            out[i] = static_cast<scalar_t>(static_cast<acc_t>(g1[i]) * d * gain);
            continue;
        }
        const acc_t s = b != nullptr ? v + static_cast<acc_t>(b[(i / stride_dim) % size_dim]) : v;
        acc_t f, d1, d2;
        activation<acc_t>(act, s, alpha, mode, f, d1, d2);
        const acc_t y = f * gain;
        if (mode == 0) {
            // Comparisons rather than fmin / fmax so that NaN stays NaN, like torch.clamp.
            const acc_t r = clamp < acc_t(0) ? y : (y > clamp ? clamp : (y < -clamp ? -clamp : y));
            out[i] = static_cast<scalar_t>(r);
            continue;
        }
        // torch.clamp passes the gradient where -clamp <= y <= clamp (inclusive).
        const bool pass = clamp < acc_t(0) || (y >= -clamp && y <= clamp);
        acc_t r = acc_t(0);
        if (pass)
            r = mode == 1 ? static_cast<acc_t>(g1[i]) * d1 * gain
                          : static_cast<acc_t>(g2[i]) * static_cast<acc_t>(g1[i]) * d2 * gain;
        out[i] = static_cast<scalar_t>(r);
    }
}

}  // namespace bias_act_kernel
