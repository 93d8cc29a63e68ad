// MathJax 3 settings. The site serves MathJax itself (mathjax/es5/, copied from the `docs`
// extra by docs/hooks.py), so formulas typeset with no network. Only these elements are
// typeset, so a $ in code, an output or the navigation stays a $:
// - Markdown pages: pymdownx.arithmatex (generic) wraps each formula in \( \) or \[ \] inside
//   an element of class "arithmatex";
// - notebook pages (mkdocs-jupyter): markdown cells keep Jupyter's $ $ and $$ $$ inside
//   "jp-RenderedMarkdown", and LaTeX outputs are "jp-RenderedLatex", as Jupyter shows them.
const MATH = ".arithmatex, .jp-RenderedMarkdown, .jp-RenderedLatex";

function typesetMath() {
  return MathJax.typesetPromise(Array.from(document.querySelectorAll(MATH)));
}

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  startup: {
    typeset: false,
    pageReady: () => MathJax.startup.defaultPageReady().then(typesetMath)
  }
};

// material's instant navigation swaps pages without a reload: typeset each new page (its first
// emission comes before MathJax has loaded, and pageReady typesets that page)
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      // the CommonHTML output has a cache to clear; the SVG output (the one served) has none
      if (MathJax.startup.output.clearCache) MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      typesetMath();
    }
  });
}
