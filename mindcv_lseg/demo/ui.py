"""The demo page (Gradio Blocks) around a :class:`~mindcv_lseg.demo.service.DemoService`.

Offline by construction: no analytics or version check, no share link, no server-side rendering, the default
theme's fonts are served by the local server, and nothing on the page loads from another host.
"""

import logging
import os
from typing import Optional, Sequence

from .service import PROMPT_TEMPLATE, DemoInputError, DemoService

__all__ = ["build_ui", "launch", "offline_environment"]

_log = logging.getLogger("mindcv_lseg.demo")

CSS = """
#status {min-height: 2.5em}
.lseg-error {color: #b42318; font-weight: 600}
#input_image img, #overlay img, #mask img {width: 100% !important; height: 100% !important; object-fit: contain}
"""


def offline_environment(work_dir: str) -> None:
    """Environment for Gradio, set before it is imported: no telemetry, no hub access, uploads under ``work_dir``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(work_dir, "uploads"))
    os.environ["GRADIO_SSR_MODE"] = "False"


def _status(text: str, error: bool = False) -> str:
    if error:
        return f'<p class="lseg-error">Error: {_escape(text)}</p>'
    return f"<p>{_escape(text)}</p>"


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_ui(service: DemoService, examples: Sequence[str] = (), note: Optional[str] = None):
    """Build the page.

    Args:
        service: the network and request handling.
        examples: image files offered as clickable examples (copied by Gradio into its cache; the page shows
            neither their folder nor the checkpoint's).
        note: a line shown under the title (e.g. "serving the quickstart's toy model").

    Returns:
        ``gradio.Blocks`` (call :func:`launch`).
    """
    import gradio as gr

    from ..eval.inference import EVAL_MODES

    default_labels = ", ".join(service.default_labels)
    lim = service.limits

    def run(image, labels, mode, templates):
        # preprocess=False: ``image`` is Gradio's file record of the upload (already checked to be in its upload
        # cache), so the file is opened here with this package's checks, not by Gradio.
        path = image.get("path") if isinstance(image, dict) else None
        name = image.get("orig_name") if isinstance(image, dict) else None
        try:
            out = service.handle(path, labels, mode, templates, client_name=name)
        except DemoInputError as e:
            return None, None, None, None, _status(str(e), error=True)
        except Exception:  # never show internals (paths, tracebacks) to the client; the server log has them
            _log.exception("demo request failed")
            return None, None, None, None, _status("internal error while segmenting; see the server log", True)
        h, w = out.result.label_map.shape
        msg = f"Segmented {w}x{h} px with {len(out.result.labels)} labels in {out.seconds:.2f} s " f"(mode {mode})."
        text = " ".join([msg] + [n[0].upper() + n[1:] + "." for n in out.notes])
        return out.overlay, out.mask_rgb, out.table, out.mask_path, _status(text)

    with gr.Blocks(title="LSeg demo", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            "## LSeg: language-driven semantic segmentation\n"
            f"Model `{service.model_name}`. Type any labels, comma-separated: every pixel goes to the label whose "
            "text embedding is closest to the pixel's embedding." + (f"\n\n**{note}**" if note else "")
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label="Image (upload, drop or click an example)",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    elem_id="input_image",
                    format="png",
                    height=320,
                    buttons=["fullscreen"],
                )
                labels = gr.Textbox(label="Labels (comma-separated)", value=default_labels, lines=2, elem_id="labels")
                mode = gr.Radio(
                    list(EVAL_MODES),
                    value="whole",
                    label="Eval mode",
                    elem_id="mode",
                    info="whole: one pass; slide: 480 px windows; ms_flip: multi-scale + flip "
                    "(the paper's evaluation, many passes: slowest)",
                )
                with gr.Accordion("Prompt templates (optional)", open=False):
                    templates = gr.Textbox(
                        label="One per line, {} = the label; empty = raw labels (reference)",
                        placeholder=PROMPT_TEMPLATE,
                        lines=2,
                        elem_id="templates",
                    )
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                status = gr.HTML(elem_id="status")
                gr.Markdown(
                    f"Limits: {lim.max_file_mb:g} MB per file, {lim.max_pixels / 1e6:g} MP, longer side "
                    f"downscaled to {lim.max_side} px, {lim.max_labels} labels."
                )
            with gr.Column(scale=1):
                overlay = gr.Image(
                    label="Overlay with legend",
                    type="pil",
                    format="png",
                    interactive=False,
                    elem_id="overlay",
                    height=320,
                    buttons=["download", "fullscreen"],
                )
                mask = gr.Image(
                    label="Colour mask",
                    type="pil",
                    format="png",
                    interactive=False,
                    elem_id="mask",
                    height=240,
                    buttons=["download", "fullscreen"],
                )
                table = gr.Dataframe(
                    headers=["id", "label", "colour", "pixels %"],
                    datatype=["number", "str", "str", "number"],
                    label="Labels",
                    interactive=False,
                    elem_id="table",
                )
                download = gr.File(label="Mask PNG (pixel value = label index)", interactive=False, elem_id="download")
        if examples:
            gr.Examples(
                examples=[[p, default_labels] for p in examples],
                inputs=[image, labels],
                label="Examples",
                elem_id="examples",
            )
        button.click(
            run,
            inputs=[image, labels, mode, templates],
            outputs=[overlay, mask, table, download, status],
            api_name="segment",
            preprocess=False,
            concurrency_limit=1,
        )
    demo.queue(default_concurrency_limit=1, max_size=lim.queue_size)
    return demo


def launch(demo, host: str = "127.0.0.1", port: int = 7860, max_file_mb: float = 10.0, quiet: bool = True):
    """Serve ``demo`` (blocks until interrupted). Binds ``host`` only; no share link, no browser opened."""
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=False,
        max_file_size=f"{max_file_mb:g}mb",
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        quiet=quiet,
        footer_links=[],
        css=CSS,
    )
