"""What the dashboard asks of the browser beyond Streamlit's own: reload a page whose frontend code
failed to load.

Streamlit's frontend fetches the code of most elements lazily, in chunks, when such an element first
appears (`static/js/Table.<hash>.js`, `DataFrame...`, `Metric...`). A chunk whose fetch failed stays
failed for the page's life (React.lazy and the browser's module map both keep the rejection): the
element reads `TypeError: Failed to fetch dynamically imported module .../static/js/Table...js` until
the page is loaded again. Such fetches fail when the browser's network changes while they are in
flight: Chromium aborts every request in flight with ERR_NETWORK_CHANGED when an interface or an
address comes or goes (on a host running the embedded cluster, every pod's veth does), and a busy
machine keeps fetches in flight longer; a laptop joining a VPN does the same.

`GUARD` is a script in the head of every page (kubeforge_dashboard.gate puts it there, ahead of any
of Streamlit's code): when the page's own code fails to load (its entry module, a preloaded module,
its style sheet), when Vite reports a failed preload, or when an element shows a chunk's failure, it
reloads the page, at most MAX_RELOADS times per browser tab and minute (waiting a little longer each
time), so a real outage still shows its error. It is our own constant text; nothing a tenant writes
reaches it."""

from __future__ import annotations

from typing import Final

MAX_RELOADS: Final = 8
RELOADS_KEY: Final = "kubeforge-chunk-reloads"  # sessionStorage: reloads done in this tab (tests read it)
FAILED_CHUNK: Final = (r"Failed to fetch dynamically imported module|error loading dynamically imported module|"
                       r"Importing a module script failed")

GUARD: Final = f"""<script>
(() => {{
  if (window.__kubeforgeChunkGuard) return;
  window.__kubeforgeChunkGuard = true;
  const failed = new RegExp({FAILED_CHUNK!r});
  let reloading = false;
  const reload = () => {{
    const done = Number(sessionStorage.getItem({RELOADS_KEY!r}) || "0");
    if (reloading || done >= {MAX_RELOADS}) return;
    reloading = true;
    sessionStorage.setItem({RELOADS_KEY!r}, String(done + 1));
    setTimeout(() => window.location.reload(), Math.min(250 * done, 2000));
  }};
  // the page's own code (its entry module, a module it preloads, its style sheet) failed to load
  window.addEventListener("error", (e) => {{
    const t = e.target;
    if (t && (t.tagName === "SCRIPT" || (t.tagName === "LINK" && /stylesheet|modulepreload/.test(t.rel)))) reload();
  }}, true);
  // a lazily loaded chunk failed: Vite says so for a chunk's dependencies, an element shows it for the chunk
  window.addEventListener("vite:preloadError", reload);
  let pending = false;
  const check = () => {{
    pending = false;
    for (const alert of document.querySelectorAll('[role="alert"]')) {{
      if (failed.test(alert.textContent || "")) {{ reload(); return; }}
    }}
  }};
  const watch = () => new MutationObserver(() => {{
    if (!pending) {{ pending = true; setTimeout(check, 250); }}
  }}).observe(document.body, {{childList: true, subtree: true}});
  if (document.body) watch(); else document.addEventListener("DOMContentLoaded", watch);
  setTimeout(() => sessionStorage.removeItem({RELOADS_KEY!r}), 60000);
}})();
</script>"""
