"""Where the LVLM lives: a local model folder or a site's OpenAI-compatible server, and how to open it.

The same small record is filled by the command line's options and by the GUI's LVLM dialog. The API key
never appears here: only the NAME of the environment variable that holds it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from lvlmva_desktop.lvlm.backend import LVLMBackend, LVLMError


@dataclass
class LVLMConfig:
    kind: str = "local"  # "local" (a transformers folder) or "endpoint" (OpenAI-compatible server)
    folder: str = ""
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    base_url: str = ""
    model: str = ""
    api_key_env: str = ""
    timeout_s: float = 120.0
    max_concurrency: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LVLMConfig:
        if not isinstance(d, dict):
            raise LVLMError(
                'The LVLM settings must be a JSON object, e.g. {"kind": "local", "folder": "..."}.'
            )
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise LVLMError(f"Unknown LVLM settings: {', '.join(unknown)}.")
        for k, v in d.items():
            want = {"str": str, "bool": bool, "float": (int, float), "int": int}[str(known[k])]
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise LVLMError(f"The LVLM setting '{k}' has the wrong type: {v!r}.")
        return cls(**d)

    def validate(self) -> None:
        if self.kind == "local":
            if not self.folder:
                raise LVLMError(
                    "Choose the folder that holds the LVLM's weights (config.json, *.safetensors)."
                )
        elif self.kind == "endpoint":
            if not self.base_url or not self.model:
                raise LVLMError(
                    "An LVLM server needs its base URL (e.g. http://gpu-server:8000/v1) and a model name."
                )
            from lvlmva_desktop.core.runtime.secrets import (
                check_variable_name,
                has_credentials,
                without_credentials,
            )

            if has_credentials(self.base_url):
                raise LVLMError(
                    f"The LVLM server URL {without_credentials(self.base_url)} must not carry a user name or "
                    "password: they would be stored with the settings and the project's records. Give the "
                    "server's key in an environment variable and name it instead."
                )
            try:
                check_variable_name(self.api_key_env)
            except ValueError as e:
                raise LVLMError(str(e)) from None
        else:
            raise LVLMError(f"Unknown LVLM kind '{self.kind}'; use 'local' or 'endpoint'.")


def open_backend(config: LVLMConfig, state=None) -> LVLMBackend:
    """Load the model (local) or prepare the client (endpoint); errors are LVLMError in words."""
    config.validate()
    if config.kind == "local":
        from lvlmva_desktop.lvlm.local import LocalBackend

        return LocalBackend(
            config.folder,
            device=config.device,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            state=state,
        )
    from lvlmva_desktop.lvlm.endpoint import EndpointBackend

    return EndpointBackend(
        config.base_url,
        config.model,
        api_key_env=config.api_key_env or None,
        timeout_s=config.timeout_s,
        max_concurrency=config.max_concurrency,
    )
