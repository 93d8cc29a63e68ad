// MathJax 3 settings. The site serves MathJax itself (mathjax/es5/, copied from the `docs`
// extra by docs/hooks.py), so formulas typeset with no network.
// - Markdown pages: pymdownx.arithmatex (generic) wraps formulas in \( \) and \[ \] inside
//   elements of class "arithmatex";
// - notebook pages (mkdocs-jupyter): markdown cells keep Jupyter's $ $ and $$ $$ inside
//   "jp-RenderedMarkdown" (and LaTeX outputs inside "jp-RenderedLatex"), as Jupyter shows them.
// Everything else (code, outputs, navigation) is left alone.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown|jp-RenderedLatex"
  }
};

// material's instant navigation swaps pages without a reload: typeset each new page
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
