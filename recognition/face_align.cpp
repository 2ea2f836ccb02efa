// Ref: insightface python-package/insightface/utils/face_align.py; skimage 0.19 _geometric.py _umeyama
#include "recognition/face_align.h"

#include <opencv2/imgproc.hpp>

#include <cmath>
#include <limits>

#include "core/check.h"

namespace idsynth::recognition {

namespace {

constexpr int kPoints = 5;

// Column means the way numpy reduces a float32 (5, 2) array along axis 0: a float32 running sum
// over the rows, then a float32 division by the count.
cv::Point2f float_mean(const Landmarks5& p) {
  float sx = 0.0f, sy = 0.0f;
  for (const auto& q : p) {
    sx += q.x;
    sy += q.y;
  }
  return {sx / static_cast<float>(kPoints), sy / static_cast<float>(kPoints)};
}

// ---------------------------------------------------------------------------------------------
// numpy.linalg computes in float64 even for float32 input and casts the factors back to float32:
// skimage's svd(A) of a float32 A is dgesdd's float64 SVD rounded to float32. This 2×2 SVD
// follows, operation by operation, the path reference LAPACK's dgesdd takes for jobz='A',
// m = n = 2: dgebd2 (one Householder reflector from dlarfg), dbdsqr's 2×2 block (dlasv2, drot
// on identity factors, sign fix, decreasing order) and dormbr applying the reflector to U (dlarf:
// dgemv + dger). The float32 rounding hides the last-bit differences between LAPACK builds.

struct Svd2 {
  double u[2][2];  // A = U · diag(s) · Vt, as numpy returns them
  double s[2];
  double vt[2][2];
};

double fsign(double a, double b) { return b >= 0.0 && !std::signbit(b) ? std::fabs(a) : -std::fabs(a); }

// LAPACK dlapy2: sqrt(x² + y²) without destructive underflow or overflow.
double lapy2(double x, double y) {
  const double xa = std::fabs(x), ya = std::fabs(y);
  const double w = std::max(xa, ya), z = std::min(xa, ya);
  if (z == 0.0 || w > std::numeric_limits<double>::max()) return w;
  const double q = z / w;
  return w * std::sqrt(1.0 + q * q);
}

// LAPACK dlasv2: SVD of the upper-triangular [[f, g], [0, h]].
void lasv2(double f, double g, double h, double& ssmin, double& ssmax, double& snr, double& csr, double& snl, double& csl) {
  double ft = f, fa = std::fabs(ft), ht = h, ha = std::fabs(h);
  int pmax = 1;
  const bool swap = ha > fa;
  if (swap) {
    pmax = 3;
    std::swap(ft, ht);
    std::swap(fa, ha);
  }
  const double gt = g, ga = std::fabs(gt);
  double clt, crt, slt, srt;
  if (ga == 0.0) {
    ssmin = ha;
    ssmax = fa;
    clt = 1.0;
    crt = 1.0;
    slt = 0.0;
    srt = 0.0;
  } else {
    bool gasmal = true;
    if (ga > fa) {
      pmax = 2;
      if (fa / ga < std::numeric_limits<double>::epsilon() * 0.5) {
        gasmal = false;
        ssmax = ga;
        ssmin = ha > 1.0 ? fa / (ga / ha) : (fa / ga) * ha;
        clt = 1.0;
        slt = ht / gt;
        srt = 1.0;
        crt = ft / gt;
      }
    }
    if (gasmal) {
      const double d = fa - ha;
      double l = d == fa ? 1.0 : d / fa;
      const double m = gt / ft;
      double t = 2.0 - l;
      const double mm = m * m;
      const double tt = t * t;
      const double s = std::sqrt(tt + mm);
      const double r = l == 0.0 ? std::fabs(m) : std::sqrt(l * l + mm);
      const double a = 0.5 * (s + r);
      ssmin = ha / a;
      ssmax = fa * a;
      if (mm == 0.0) {
        t = l == 0.0 ? fsign(2.0, ft) * fsign(1.0, gt) : gt / fsign(d, ft) + m / t;
      } else {
        t = (m / (s + t) + m / (r + l)) * (1.0 + a);
      }
      l = std::sqrt(t * t + 4.0);
      crt = 2.0 / l;
      srt = t / l;
      clt = (crt + srt * m) / a;
      slt = (ht / ft) * srt / a;
    }
  }
  if (swap) {
    csl = srt;
    snl = crt;
    csr = slt;
    snr = clt;
  } else {
    csl = clt;
    snl = slt;
    csr = crt;
    snr = srt;
  }
  double tsign = 1.0;
  if (pmax == 1) tsign = fsign(1.0, csr) * fsign(1.0, csl) * fsign(1.0, f);
  if (pmax == 2) tsign = fsign(1.0, snr) * fsign(1.0, csl) * fsign(1.0, g);
  if (pmax == 3) tsign = fsign(1.0, snr) * fsign(1.0, snl) * fsign(1.0, h);
  ssmax = fsign(ssmax, tsign);
  ssmin = fsign(ssmin, tsign * fsign(1.0, f) * fsign(1.0, h));
}

Svd2 gesdd_2x2(const double a_in[2][2]) {
  double a11 = a_in[0][0], a12 = a_in[0][1], a21 = a_in[1][0], a22 = a_in[1][1];
  // dgebd2, i = 1: dlarfg(2, a11, a21) -> beta, tau, v = [1, v2]; H·A(:, 2) via dlarf
  double tau = 0.0, v2 = 0.0, d1 = a11;
  if (a21 != 0.0) {
    const double xnorm = std::fabs(a21);  // dnrm2 of one element
    const double beta = -fsign(lapy2(a11, xnorm), a11);
    tau = (beta - a11) / beta;
    v2 = a21 * (1.0 / (a11 - beta));
    d1 = beta;
    const double w = (0.0 + a12 * 1.0) + a22 * v2;  // dgemv('T')
    if (w != 0.0) {                                // dger with alpha = -tau
      const double temp = -tau * w;
      a12 = a12 + 1.0 * temp;
      a22 = a22 + v2 * temp;
    }
  }
  double e1 = a12, d2 = a22;
  // dbdsqr: the 2×2 block (the off-diagonal is far above its convergence threshold here)
  double uu[2][2] = {{1.0, 0.0}, {0.0, 1.0}};
  double vt[2][2] = {{1.0, 0.0}, {0.0, 1.0}};
  double s1 = d1, s2 = d2;
  if (e1 != 0.0) {
    double sigmn, sigmx, sinr, cosr, sinl, cosl;
    lasv2(d1, e1, d2, sigmn, sigmx, sinr, cosr, sinl, cosl);
    s1 = sigmx;
    s2 = sigmn;
    vt[0][0] = cosr;  // drot on the identity rows of VT
    vt[0][1] = sinr;
    vt[1][0] = -sinr;
    vt[1][1] = cosr;
    uu[0][0] = cosl;  // drot on the identity columns of U
    uu[1][0] = sinl;
    uu[0][1] = -sinl;
    uu[1][1] = cosl;
  }
  double s[2] = {s1, s2};
  for (int i = 0; i < 2; ++i) {
    if (s[i] < 0.0) {
      s[i] = -s[i];
      vt[i][0] = -vt[i][0];
      vt[i][1] = -vt[i][1];
    }
  }
  if (s[0] < s[1]) {
    std::swap(s[0], s[1]);
    std::swap(vt[0], vt[1]);
    for (int r = 0; r < 2; ++r) std::swap(uu[r][0], uu[r][1]);
  }
  // dormbr('Q'): U := H·U, dlarf('Left') with v = [1, v2]
  if (tau != 0.0) {
    for (int j = 0; j < 2; ++j) {
      const double w = (0.0 + uu[0][j] * 1.0) + uu[1][j] * v2;
      if (w != 0.0) {
        const double temp = -tau * w;
        uu[0][j] = uu[0][j] + 1.0 * temp;
        uu[1][j] = uu[1][j] + v2 * temp;
      }
    }
  }
  Svd2 out;
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) {
      out.u[r][c] = uu[r][c];
      out.vt[r][c] = vt[r][c];
    }
  out.s[0] = s[0];
  out.s[1] = s[1];
  return out;
}

}  // namespace

const Landmarks5& arcface_template() {
  static const Landmarks5 dst = {cv::Point2f(38.2946f, 51.6963f), cv::Point2f(73.5318f, 51.5014f),
                                 cv::Point2f(56.0252f, 71.7366f), cv::Point2f(41.5493f, 92.3655f),
                                 cv::Point2f(70.7299f, 92.2041f)};
  return dst;
}

cv::Matx23d umeyama_similarity(const Landmarks5& src, const Landmarks5& dst) {
  // 1. means and centred points (float32)
  const cv::Point2f src_mean = float_mean(src);
  const cv::Point2f dst_mean = float_mean(dst);
  Landmarks5 s, d;
  for (int i = 0; i < kPoints; ++i) {
    s[i] = src[i] - src_mean;
    d[i] = dst[i] - dst_mean;
  }
  // 2. A = dstᵀ·src / n (float32, sequential sums like a reference sgemm)
  float a[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 2; ++c) {
      float acc = 0.0f;
      for (int i = 0; i < kPoints; ++i) {
        const float dv = r == 0 ? d[i].x : d[i].y;
        const float sv = c == 0 ? s[i].x : s[i].y;
        acc += dv * sv;
      }
      a[r][c] = acc / static_cast<float>(kPoints);
    }
  }
  // 3. reflection check on det(A) (numpy: float64 LU of the float32 matrix; only the sign matters)
  double dvec[2] = {1.0, 1.0};
  const double det_a = static_cast<double>(a[0][0]) * a[1][1] - static_cast<double>(a[0][1]) * a[1][0];
  if (det_a < 0.0) dvec[1] = -1.0;
  // 4. SVD in float64, factors rounded to float32 (numpy.linalg for a float32 matrix)
  const double a64[2][2] = {{a[0][0], a[0][1]}, {a[1][0], a[1][1]}};
  const Svd2 svd = gesdd_2x2(a64);
  float u[2][2], v[2][2], sv[2];
  for (int r = 0; r < 2; ++r) {
    sv[r] = static_cast<float>(svd.s[r]);
    for (int c = 0; c < 2; ++c) {
      u[r][c] = static_cast<float>(svd.u[r][c]);
      v[r][c] = static_cast<float>(svd.vt[r][c]);
    }
  }
  // numpy matrix_rank: singular values above max(S)·max(M, N)·eps(float32)
  const float tol = sv[0] * 2.0f * std::numeric_limits<float>::epsilon();
  const int rank = (sv[0] > tol) + (sv[1] > tol);
  // 5. rotation in float64 from the float32 factors
  double R[2][2];
  auto rotation = [&](double d0, double d1) {
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 2; ++c)
        R[r][c] = static_cast<double>(u[r][0]) * d0 * v[0][c] + static_cast<double>(u[r][1]) * d1 * v[1][c];
  };
  if (rank == 0) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return cv::Matx23d(nan, nan, nan, nan, nan, nan);
  } else if (rank == 1) {
    const double det_u = static_cast<double>(u[0][0]) * u[1][1] - static_cast<double>(u[0][1]) * u[1][0];
    const double det_v = static_cast<double>(v[0][0]) * v[1][1] - static_cast<double>(v[0][1]) * v[1][0];
    if (det_u * det_v > 0.0)
      rotation(1.0, 1.0);
    else
      rotation(dvec[0], -1.0);
  } else {
    rotation(dvec[0], dvec[1]);
  }
  // 6. scale = (S·d) / Σ var(src) — the variances are float32 (numpy var: mean, centre, square, mean)
  float var_sum = 0.0f;
  for (int c = 0; c < 2; ++c) {
    float m = 0.0f;
    for (int i = 0; i < kPoints; ++i) m += c == 0 ? s[i].x : s[i].y;
    m /= static_cast<float>(kPoints);
    float q = 0.0f;
    for (int i = 0; i < kPoints; ++i) {
      const float x = (c == 0 ? s[i].x : s[i].y) - m;
      q += x * x;
    }
    var_sum += q / static_cast<float>(kPoints);
  }
  const double scale = 1.0 / static_cast<double>(var_sum) *
                       (static_cast<double>(sv[0]) * dvec[0] + static_cast<double>(sv[1]) * dvec[1]);
  // 7. t = μ_dst − scale·R·μ_src, then scale the rotation
  const double mx = src_mean.x, my = src_mean.y;
  const double tx = static_cast<double>(dst_mean.x) - scale * (R[0][0] * mx + R[0][1] * my);
  const double ty = static_cast<double>(dst_mean.y) - scale * (R[1][0] * mx + R[1][1] * my);
  return cv::Matx23d(R[0][0] * scale, R[0][1] * scale, tx, R[1][0] * scale, R[1][1] * scale, ty);
}

cv::Matx23d estimate_norm(const Landmarks5& landmarks, int image_size) {
  IDSYNTH_CHECK(image_size > 0 && (image_size % 112 == 0 || image_size % 128 == 0),
                "alignment: image_size: expected a multiple of 112 or 128, found ", image_size);
  // insightface computes ratio and offset in float64, then multiplies the float32 template (the
  // products stay float32 in numpy: a float32 array times a Python float).
  float ratio;
  float diff_x;
  if (image_size % 112 == 0) {
    ratio = static_cast<float>(image_size / 112.0);
    diff_x = 0.0f;
  } else {
    ratio = static_cast<float>(image_size / 128.0);
    diff_x = static_cast<float>(8.0 * (image_size / 128.0));
  }
  Landmarks5 dst = arcface_template();
  for (auto& p : dst) {
    p.x = p.x * ratio + diff_x;
    p.y = p.y * ratio;
  }
  return umeyama_similarity(landmarks, dst);
}

cv::Mat warp_crop(const cv::Mat& image, const cv::Matx23d& M, int size) {
  IDSYNTH_CHECK(!image.empty(), "alignment: image: expected a non-empty image");
  cv::Mat out;
  cv::warpAffine(image, out, cv::Mat(M), cv::Size(size, size), cv::INTER_LINEAR, cv::BORDER_CONSTANT,
                 cv::Scalar::all(0));
  return out;
}

cv::Mat norm_crop(const cv::Mat& image, const Landmarks5& landmarks, int image_size) {
  return warp_crop(image, estimate_norm(landmarks, image_size), image_size);
}

}  // namespace idsynth::recognition
