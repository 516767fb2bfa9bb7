// Renders every diagram of the page with the bundled Mermaid (assets/mermaid.min.js), never a
// CDN copy. When done, <body data-mermaid="done"> (or "failed") tells a test it may look.
(function () {
  mermaid.initialize({
    startOnLoad: false,
    securityLevel: "strict",
    theme: "default",
    // Arial metrics everywhere: Debian's fonts-liberation (installed by .ci/run) stands in for it.
    fontFamily: "Arial, Helvetica, \"Liberation Sans\", sans-serif",
    fontSize: 16,
    state: { useMaxWidth: true, nodeSpacing: 24, rankSpacing: 50 },
    // Where a label wraps (Mermaid takes it from the flowchart settings for every diagram):
    // wider than the default 200 px, so a note's "from every state but ..." stays on one line.
    flowchart: { wrappingWidth: 300 },
  });
  const nodes = document.querySelectorAll("div.mermaid");
  if (nodes.length === 0) {
    document.body.dataset.mermaid = "done";
    return;
  }
  mermaid
    .run({ nodes: nodes })
    .then(function () {
      document.body.dataset.mermaid = "done";
    })
    .catch(function (error) {
      console.error("mermaid:", error);
      document.body.dataset.mermaid = "failed";
    });
})();
