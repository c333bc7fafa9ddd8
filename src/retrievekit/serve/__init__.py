"""``retrievekit serve``: OpenAI-compatible embeddings, rerank (Cohere/infinity and TEI shapes) and
search over any saved index, with dynamic batching and limits. Needs the ``serve`` extra."""

from retrievekit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "load_served"]


def __getattr__(name: str) -> object:  # the app and the loaders pull in FastAPI and the models
    if name == "create_app":
        from retrievekit.serve.app import create_app

        return create_app
    if name == "load_served":
        from retrievekit.serve.loading import load_served

        return load_served
    raise AttributeError(name)
