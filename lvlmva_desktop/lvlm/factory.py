"""The one critic factory, LVLM included: the command line, the window and resume build critics here.

Each caller first says which critic it wants as the identity a critique run records (``Critic.identity()``):
the command line and the window turn the user's choice into one with ``core.method.critic.critic_spec``, resume
reads it from the interrupted run. ``build_critic`` then builds it through ``core.method.critic.critic_from_identity``;
for an LVLM critic, with the model the caller loaded (``backend``) or opens on demand (``open_backend``),
the project's prompt templates and its critique cache. Resume (core/store/recovery.py, which may not import this
package) receives the same LVLM builder, ``lvlm_builder``, from its caller.

    spec = critic_spec("lvlm", lvlm_settings={"one_call": True})
    critic = build_critic(spec, project, expl_id, backend=backend)
    recovery.resume(project, run_id, device, state, lvlm_builder(project, backend=backend))

The LVLM modules are imported only when an LVLM critic is built, so a simulated or expert critique does not
load them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lvlmva_desktop.core.method.critic import Critic, LVLMCriticBuilder, critic_from_identity, critic_spec

if TYPE_CHECKING:
    from lvlmva_desktop.lvlm.backend import LVLMBackend
    from lvlmva_desktop.lvlm.critic import CriticSettings

log = logging.getLogger(__name__)

__all__ = ["build_critic", "critic_settings", "critic_spec", "lvlm_builder"]


def critic_settings(recorded: Mapping[str, Any] | None) -> CriticSettings:
    """The LVLM critic's settings from a recorded or chosen dict; what is not given keeps its default.
    A setting this version does not know (recorded by a newer one) is left out, and said so in the log."""
    from lvlmva_desktop.lvlm.critic import CriticSettings

    given = dict(recorded or {})
    known = CriticSettings.__dataclass_fields__
    unknown = sorted(set(given) - set(known))
    if unknown:
        log.warning("LVLM critic settings this version does not know are left out: %s", ", ".join(unknown))
    return CriticSettings(**{k: v for k, v in given.items() if k in known})


def lvlm_builder(
    project: Any,
    backend: LVLMBackend | None = None,
    open_backend: Callable[[], LVLMBackend] | None = None,
) -> LVLMCriticBuilder | None:
    """A function from LVLM critic settings to the LVLM critic on ``backend`` (or on the one
    ``open_backend`` opens, when the critic is built), with ``project``'s templates and cache; None when
    neither is given (no LVLM is at hand)."""
    if backend is None and open_backend is None:
        return None

    def build(settings: dict) -> Critic:
        from lvlmva_desktop.lvlm.critic import LVLMCritic
        from lvlmva_desktop.lvlm.prompts import TemplateSet

        chosen = critic_settings(settings)
        model = backend if backend is not None else open_backend()  # type: ignore[misc]
        return LVLMCritic(model, TemplateSet.for_project(project), chosen, cache=project)

    return build


def build_critic(
    spec: Mapping[str, Any],
    project: Any,
    expl_id: int | None = None,
    *,
    backend: LVLMBackend | None = None,
    open_backend: Callable[[], LVLMBackend] | None = None,
) -> Critic:
    """The critic ``spec`` describes (``critic_spec``'s choice or a recorded identity); ``expl_id``: the
    explanation whose expert verdicts the expert critic gives."""
    return critic_from_identity(spec, project, expl_id, lvlm_builder(project, backend, open_backend))
