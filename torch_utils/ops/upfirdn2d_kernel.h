// The upfirdn2d kernel itself (included by upfirdn2d.cu). Written against the CUDA keywords only, so that a
// test can also compile it for the host (tests/torch_utils/ops/kernel_host_harness.cpp) and check it on CPU.
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>

namespace upfirdn2d_kernel {

struct Geometry {
    int64_t C, in_h, in_w, out_h, out_w;
    int64_t sxn, sxc, sxh, sxw;  // Input strides.
    int64_t syn, syc, syh, syw;  // Output strides.
    int fh, fw, upx, upy, downx, downy;
    int64_t px0, py0;
};

// Host side: the geometry of y = upfirdn2d(x, g) for the launcher (upfirdn2d.cu) and the host test harness.
inline Geometry make_geometry(const at::Tensor& x, const at::Tensor& y, const at::Tensor& g, int64_t upx, int64_t upy,
                              int64_t downx, int64_t downy, int64_t px0, int64_t py0) {
    Geometry p;
    p.C = x.size(1);
    p.in_h = x.size(2);
    p.in_w = x.size(3);
    p.out_h = y.size(2);
    p.out_w = y.size(3);
    p.sxn = x.stride(0); p.sxc = x.stride(1); p.sxh = x.stride(2); p.sxw = x.stride(3);
    p.syn = y.stride(0); p.syc = y.stride(1); p.syh = y.stride(2); p.syw = y.stride(3);
    p.fh = int(g.size(0));
    p.fw = int(g.size(1));
    p.upx = int(upx); p.upy = int(upy); p.downx = int(downx); p.downy = int(downy);
    p.px0 = px0;
    p.py0 = py0;
    return p;
}

__device__ __forceinline__ int64_t positive_mod(int64_t a, int64_t m) { return ((a % m) + m) % m; }

template <typename scalar_t>
__global__ void upfirdn2d_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                                 const at::opmath_type<scalar_t>* __restrict__ g, Geometry p, int64_t total) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t step = int64_t(blockDim.x) * gridDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
        const int64_t ox = i % p.out_w;
        int64_t rest = i / p.out_w;
        const int64_t oy = rest % p.out_h;
        rest /= p.out_h;
        const int64_t c = rest % p.C;
        const int64_t n = rest / p.C;
        // Position of tap 0 in the zero-inserted, padded input; only taps with (j0 + t) % up == 0 hit a sample.
        const int64_t jx0 = ox * p.downx - p.px0;
        const int64_t jy0 = oy * p.downy - p.py0;
        const scalar_t* xp = x + n * p.sxn + c * p.sxc;
        acc_t sum = acc_t(0);
        for (int64_t ty = positive_mod(-jy0, p.upy); ty < p.fh; ty += p.upy) {
            const int64_t iy = (jy0 + ty) / p.upy;  // Exact division: jy0 + ty is a multiple of upy.
            if (iy < 0)
                continue;
            if (iy >= p.in_h)
                break;
            for (int64_t tx = positive_mod(-jx0, p.upx); tx < p.fw; tx += p.upx) {
                const int64_t ix = (jx0 + tx) / p.upx;
                if (ix < 0)
                    continue;
                if (ix >= p.in_w)
                    break;
                sum += static_cast<acc_t>(xp[iy * p.sxh + ix * p.sxw]) * g[ty * p.fw + tx];
            }
        }
        y[n * p.syn + c * p.syc + oy * p.syh + ox * p.syw] = static_cast<scalar_t>(sum);
    }
}

}  // namespace upfirdn2d_kernel
