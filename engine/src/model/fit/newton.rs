//! Damped Newton to the exact optimum: from zero when the parameters are
//! few enough for a dense Hessian (the usual case: one per level and per
//! numeric column), or from the L-BFGS solution to finish it.
//!
//! The objective is smooth and strictly convex (the L2 term), so Newton
//! converges in a handful of steps from zero and in two or three from
//! L-BFGS's answer; each step is one pass over the rows for the Hessian
//! where L-BFGS needs hundreds of passes (scikit-learn's newton-cholesky
//! makes the same trade). Each step
//! builds the Hessian, `(1/S) Σ s_i p_i (1 - p_i) x_i x_iᵀ` plus the L2 term
//! on every parameter but the intercept, from the sparse rows (a row
//! touches its active levels and the numeric columns only), and solves by
//! Cholesky. A step that does not lower the objective is halved, and a
//! Hessian that is not positive definite (a numerical failure) ends the
//! polish: the L-BFGS solution stands.

use super::encoding::Encoded;
use crate::model::Model;

/// Beyond this many parameters the dense Hessian (n² doubles) costs more
/// than the precision it buys; the L-BFGS solution stands.
pub(super) const MAX_PARAMS: usize = 2_000;
/// Steps of a finish after L-BFGS.
pub(super) const POLISH_STEPS: usize = 8;
/// Steps of a solve from zero before L-BFGS takes over.
pub(super) const SOLVE_STEPS: usize = 100;
/// The largest gradient entry at which the fit counts as converged.
const GRADIENT_TOLERANCE: f64 = 1e-10;

/// The fit's data, as the objective sees it.
pub(super) struct Problem<'a> {
    pub(super) rows: &'a [Encoded],
    pub(super) standardised: &'a [Vec<f64>],
    pub(super) weights: &'a [f64],
    pub(super) total_weight: f64,
    pub(super) penalty: f64,
    pub(super) numeric_offset: usize,
}

pub(super) struct Polished {
    pub(super) theta: Vec<f64>,
    pub(super) steps: usize,
    /// The gradient vanished (to 1e-10) where it stopped.
    pub(super) converged: bool,
}

/// Up to `max_steps` damped Newton steps from `theta`.
pub(super) fn minimise(
    mut theta: Vec<f64>,
    problem: &Problem<'_>,
    objective: &impl Fn(&Vec<f64>) -> f64,
    gradient: &impl Fn(&mut Vec<f64>, &Vec<f64>),
    max_steps: usize,
) -> Polished {
    let n = theta.len();
    let mut steps = 0;
    let mut g = vec![0.0; n];
    let converged = |g: &[f64]| g.iter().all(|x| x.abs() < GRADIENT_TOLERANCE);
    if n > MAX_PARAMS {
        gradient(&mut g, &theta);
        return Polished {
            converged: converged(&g),
            theta,
            steps,
        };
    }
    let mut current = objective(&theta);
    while steps < max_steps {
        gradient(&mut g, &theta);
        if converged(&g) && steps > 0 {
            break;
        }
        let Some(direction) = solve(hessian(problem, &theta), &g) else {
            break;
        };
        let size = direction.iter().fold(0.0f64, |m, d| m.max(d.abs()));
        if !size.is_finite() {
            break;
        }
        let mut scale = 1.0;
        let mut moved = false;
        for _ in 0..20 {
            let candidate: Vec<f64> = theta.iter().zip(&direction).map(|(t, d)| t - scale * d).collect();
            let value = objective(&candidate);
            if value <= current {
                theta = candidate;
                current = value;
                moved = true;
                break;
            }
            scale /= 2.0;
        }
        if !moved {
            break;
        }
        steps += 1;
        if size * scale < 1e-13 {
            break;
        }
    }
    gradient(&mut g, &theta);
    Polished {
        converged: converged(&g),
        theta,
        steps,
    }
}

/// The Hessian of the objective at `theta`, dense, row-major.
fn hessian(problem: &Problem<'_>, theta: &[f64]) -> Vec<f64> {
    let n = theta.len();
    let mut h = vec![0.0; n * n];
    let mut active: Vec<(usize, f64)> = Vec::new();
    for (i, row) in problem.rows.iter().enumerate() {
        active.clear();
        active.push((0, 1.0));
        active.extend(row.levels.iter().map(|&k| (k as usize, 1.0)));
        active.extend(
            problem.standardised[i]
                .iter()
                .enumerate()
                .map(|(j, x)| (problem.numeric_offset + j, *x)),
        );
        let z: f64 = active.iter().map(|(k, x)| theta[*k] * x).sum();
        let p = Model::probability(z);
        let curvature = problem.weights[i] * p * (1.0 - p) / problem.total_weight;
        if curvature == 0.0 {
            continue;
        }
        for &(a, xa) in &active {
            let scaled = curvature * xa;
            for &(b, xb) in &active {
                h[a * n + b] += scaled * xb;
            }
        }
    }
    for k in 1..n {
        h[k * n + k] += 2.0 * problem.penalty;
    }
    h
}

/// Solves `h x = g` for a symmetric positive definite `h` by Cholesky;
/// `None` if `h` is not positive definite.
fn solve(mut h: Vec<f64>, g: &[f64]) -> Option<Vec<f64>> {
    let n = g.len();
    // In place: the lower triangle becomes L with h = L Lᵀ.
    for j in 0..n {
        let mut d = h[j * n + j];
        for k in 0..j {
            d -= h[j * n + k] * h[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let d = d.sqrt();
        h[j * n + j] = d;
        for i in j + 1..n {
            let mut s = h[i * n + j];
            for k in 0..j {
                s -= h[i * n + k] * h[j * n + k];
            }
            h[i * n + j] = s / d;
        }
    }
    // L y = g, then Lᵀ x = y.
    let mut y = g.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= h[i * n + k] * y[k];
        }
        y[i] /= h[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= h[k * n + i] * y[k];
        }
        y[i] /= h[i * n + i];
    }
    Some(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system_and_refuses_an_indefinite_one() {
        // [[4, 2], [2, 3]] x = [2, 1]  ->  x = [0.5, 0]
        let x = solve(vec![4.0, 2.0, 2.0, 3.0], &[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
        assert!(solve(vec![1.0, 2.0, 2.0, 1.0], &[1.0, 1.0]).is_none());
    }
}
