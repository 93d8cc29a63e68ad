"""An interactive explorer for notebooks: move a slider, see a sampler against the exact target.

    import toycode
    toycode.explore("between")   # or toycode.experiments.explorer.explore

Menus and sliders set the method, N (candidates), B (block size), λ, the selection rule, the
value (Tweedie r(x̂0) or the exact soft value V_t) and T (steps). Every change reruns
:func:`toycode.experiments.api.sample` on the analytic backend and redraws the samples over
contours of the
exact tilted target p*_λ ∝ p·e^{λr}, with the reward ± s.e., MMD² in units of its noise floor
and NFE per sample beside the exact values (E_{p*}[r]; a floor of 1 is an exact sampler). A
combination the sampler refuses (a gradient method on the non-differentiable ``box`` reward,
the exact value at λ = 0, ...) shows its one-line error instead of raising.

The defaults (n = 256, T = 50) redraw in about a second on two CPU cores. The state on display
is kept in :attr:`Explorer.last` so that it can be read without a browser.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..core.sampler import SELECTIONS
from ..exact.problems import Problem, load_problem
from ..exact.reference import ExactReference
from . import api
from .plots import density_grid

__all__ = ["Explorer", "explore", "method_names"]

CANDIDATES = (1, 2, 4, 8, 16, 32, 64)
STEPS = (10, 20, 50, 100, 200)
METHOD_DEFAULT = "method's default"


def method_names() -> list[str]:
    """Every method name the sampler knows, from the method registry."""
    return list(api.METHODS)


class Explorer:
    """Widgets that sample ``problem`` with the chosen settings and show the result.

    ``controls`` maps "method", "N", "B", "lam", "selection", "value", "steps", "seed" to their
    widgets; setting a widget's ``value`` (or calling :meth:`set`) redraws. ``last`` holds what
    is on display: ``nfe``, ``reward``, ``reward_se``, ``exact_reward``, ``mmd2``, ``mmd_floor``
    (MMD² / noise floor), ``figure``, ``png``, ``settings`` and ``error`` (None, or the message
    shown instead of a figure).
    """

    def __init__(
        self,
        problem: Problem | str | Path,
        *,
        n: int = 256,
        steps: int = 50,
        method: str = "code",
        num_candidates: int = 16,
        block_size: int = 10,
        selection: str = "softmax",
        seed: int = 0,
        extent: float = 4.0,
    ):
        self.problem = problem if isinstance(problem, Problem) else load_problem(problem)
        self.n, self.extent = n, extent
        self._references: dict[float, tuple] = {}
        lam = float(self.problem.lam) if self.problem.lam > 0 else 1.0
        self.controls = {
            "method": widgets.Dropdown(options=method_names(), value=method, description="method"),
            "N": widgets.SelectionSlider(options=CANDIDATES, value=num_candidates, description="N"),
            "B": widgets.IntSlider(value=block_size, min=1, max=max(STEPS), description="B"),
            "lam": widgets.FloatSlider(value=lam, min=0.0, max=8.0, step=0.25, description="λ"),
            "selection": widgets.Dropdown(
                options=[METHOD_DEFAULT, *SELECTIONS], value=selection, description="selection"
            ),
            "value": widgets.ToggleButtons(
                options=["tweedie", "exact"], value="tweedie", description="value"
            ),
            "steps": widgets.SelectionSlider(options=STEPS, value=steps, description="T"),
            "seed": widgets.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed"),
        }
        self.image = widgets.Image(format="png")
        self.stats = widgets.HTML()
        self.message = widgets.HTML()
        self.widget = widgets.HBox(
            [
                widgets.VBox(list(self.controls.values())),
                widgets.VBox([self.image, self.stats, self.message]),
            ]
        )
        self.last: dict = {}
        self._held = False
        for control in self.controls.values():
            control.observe(self._changed, names="value")
        self.update()

    def settings(self) -> dict:
        """The current widget values, as ``api.sample`` keywords plus ``lam``."""
        c = {k: w.value for k, w in self.controls.items()}
        return {
            "method": c["method"],
            "num_candidates": c["N"],
            "block_size": c["B"],
            "lam": float(c["lam"]),
            "selection": None if c["selection"] == METHOD_DEFAULT else c["selection"],
            "value": c["value"],
            "steps": c["steps"],
            "seed": int(c["seed"]),
        }

    def set(self, **values) -> dict:
        """Set several controls by name (as in ``controls``) and redraw once; returns ``last``."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown controls {sorted(unknown)}; known: {list(self.controls)}")
        self._held = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._held = False
        return self.update()

    def _changed(self, _change) -> None:
        if not self._held:
            self.update()

    def _reference(self, lam: float):
        """The problem at λ, its target, its exact reference (sample, bandwidth, floor) and contours
        (cached: a quadrature target takes a fraction of a second to build, and the problem
        object carries it to the exact value and exact guidance)."""
        if lam not in self._references:
            problem = self.problem.with_lam(lam)
            target = problem.target
            exact = ExactReference.of_target(target, self.n, torch.Generator().manual_seed(12345))
            grid = density_grid(lambda x: target.log_prob(x).exp(), self.extent, 80)
            self._references[lam] = (problem, target, exact, grid)
        return self._references[lam]

    def update(self) -> dict:
        """Sample with the current settings and redraw; a refused combination shows its
        error message and leaves ``last["error"]`` set."""
        s = self.settings()
        try:
            problem, target, exact, grid = self._reference(s["lam"])
            res = api.sample(
                problem,
                method=s["method"],
                num_candidates=s["num_candidates"],
                block_size=s["block_size"],
                selection=s["selection"],
                value=s["value"],
                steps=s["steps"],
                n=self.n,
                seed=s["seed"],
            )
            m = exact.evaluate(res.samples, res.rewards, target)
        except (ValueError, RuntimeError) as err:
            # the sampler's errors are one line naming the setting; show it, keep the widget
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            self.message.value = f"<span style='color:#b00020'>error: {html.escape(first)}</span>"
            self.stats.value = ""
            self.last = {
                "error": first,
                "settings": s,
                "nfe": None,
                "reward": None,
                "mmd_floor": None,
                "figure": None,
                "png": None,
            }
            return self.last
        fig = self._draw(problem, res.samples, grid, {**s, **res.settings})
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        self.last = {
            "error": None,
            "settings": s,
            "nfe": res.nfe_per_sample,
            "reward": m["reward_mean"],
            "reward_se": m["reward_se"],
            "exact_reward": target.reward_mean,
            "mmd2": m["mmd2"],
            "mmd_floor": m["mmd2"] / exact.floor,
            "figure": fig,
            "png": buffer.getvalue(),
        }
        self.image.value = self.last["png"]
        self.message.value = ""
        self.stats.value = self._table()
        return self.last

    def _draw(self, problem: Problem, samples, grid, s) -> Figure:
        # a bare Figure, not pyplot: the inline backend would otherwise show every redraw
        # below the widget as well
        fig = Figure(figsize=(4.2, 4.2))
        ax = fig.add_subplot()
        xs, ys, density = grid
        ax.contour(xs, ys, density, levels=6, colors="0.5", linewidths=0.7)
        pts = samples.detach().double().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, color="C0")
        ax.set_xlim(-self.extent, self.extent)
        ax.set_ylim(-self.extent, self.extent)
        ax.set_aspect("equal")
        # the sampler's own settings: best-of-N has B = T and SMC K particles whatever the
        # sliders say
        knobs = f"K={s['particles']}" if s.get("particles", 1) > 1 else f"N={s['num_candidates']}"
        ax.set_title(
            f"{problem.name}, λ = {s['lam']:g}: {s['method']} ({knobs}, "
            f"B={s['block_size']}, T={s['steps']})\nsamples over contours of exact p*",
            fontsize=8,
        )
        fig.tight_layout()
        return fig

    def _table(self) -> str:
        x = self.last
        rows = [
            (
                "reward ± s.e.",
                f"{x['reward']:.3f} ± {x['reward_se']:.3f}",
                f"{x['exact_reward']:.3f}",
            ),
            ("MMD² / floor", f"{x['mmd_floor']:.1f}", "1"),
            ("NFE / sample", f"{x['nfe']:.0f}", ""),
        ]
        body = "".join(f"<tr><td>{a}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
        return f"<table><tr><th></th><th>samples</th><th>exact p*</th></tr>{body}</table>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explore(problem: Problem | str | Path = "between", **options) -> Explorer:
    """An :class:`Explorer` of ``problem``; the last expression of a notebook cell shows it."""
    return Explorer(problem, **options)
