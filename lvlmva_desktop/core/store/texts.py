"""The project's texts: the class descriptions, its versioned prompt templates, the critique cache and
the chat transcripts."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

from lvlmva_desktop.core.store import audit as audit_log
from lvlmva_desktop.core.store.files import (
    ProjectError,
    current_user,
)


class TextStore:
    """Part of Project (core/store/project.py): class descriptions, prompt templates, critique cache, chat."""

    # -- class descriptions -------------------------------------------------------------------------
    def set_class_descriptions(self, descriptions: dict[str, str]) -> int:
        missing = [c for c in self.classes if not descriptions.get(c, "").strip()]
        if missing:
            raise ProjectError(f"Every class needs a description; missing for: {', '.join(missing)}.")
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO class_descriptions (created, author, descriptions) VALUES (?,?,?)",
                (time.time(), current_user(), json.dumps({c: descriptions[c] for c in self.classes})),
            )
            self.audit(
                "class_descriptions",
                {"version": int(cur.lastrowid), "classes": self.classes},
                {c: audit_log.text_hash(descriptions[c]) for c in self.classes},
            )
        return int(cur.lastrowid)

    def class_descriptions(self) -> tuple[int | None, dict[str, str]]:
        row = self.db.execute("SELECT * FROM class_descriptions ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None, {c: "" for c in self.classes}
        return int(row["version"]), json.loads(row["descriptions"])

    def class_descriptions_history(self) -> list[dict]:
        """Every saved version, oldest first: {version, created, author, descriptions}."""
        rows = self.db.execute("SELECT * FROM class_descriptions ORDER BY version").fetchall()
        return [
            {
                "version": int(r["version"]),
                "created": r["created"],
                "author": r["author"],
                "descriptions": json.loads(r["descriptions"]),
            }
            for r in rows
        ]

    # -- prompt templates (the project's own versioned copy) ------------------------------------------
    def prompt_templates(self) -> dict[str, dict]:
        """The latest version of each template this project has: name -> {text, version, sha256}."""
        rows = self.db.execute(
            "SELECT t.* FROM prompt_templates t JOIN (SELECT name, MAX(version) v FROM prompt_templates "
            "GROUP BY name) m ON t.name = m.name AND t.version = m.v"
        ).fetchall()
        return {r["name"]: {"text": r["text"], "version": r["version"], "sha256": r["sha256"]} for r in rows}

    def save_prompt_template(self, name: str, text: str) -> int:
        """Store a new version of a template (unchanged text keeps the current version); returns it."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self.transaction() as db:
            row = db.execute(
                "SELECT version, sha256 FROM prompt_templates WHERE name=? ORDER BY version DESC LIMIT 1",
                (name,),
            ).fetchone()
            if row is not None and row["sha256"] == digest:
                return int(row["version"])
            version = 1 if row is None else int(row["version"]) + 1
            db.execute(
                "INSERT INTO prompt_templates (name, version, sha256, text, created, author) "
                "VALUES (?,?,?,?,?,?)",
                (name, version, digest, text, time.time(), current_user()),
            )
            self.audit("prompt_template", {"name": name, "version": version}, {"template": digest})
        return version

    def prompt_template_history(self, name: str) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM prompt_templates WHERE name=? ORDER BY version", (name,)
        ).fetchall()

    # -- critique cache and chat transcripts ----------------------------------------------------------
    def cache_get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT critique FROM critique_cache WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row["critique"])

    def cache_put(self, key: str, value: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO critique_cache (key, critique, created) VALUES (?,?,?)",
            (key, json.dumps(value), time.time()),
        )

    def add_chat_message(
        self, expl_id: int | None, sample_id: int | None, role: str, text: str, model: str = ""
    ) -> int:
        with self.transaction() as db:
            message_id = _insert_chat_message(db, expl_id, sample_id, role, text, model)
            params = {"explanation_id": expl_id, "sample_id": sample_id, "role": role, "model": model}
            self.audit("chat", params, {"text": audit_log.text_hash(text)})
        return message_id

    def add_chat_exchange(
        self,
        expl_id: int | None,
        sample_id: int | None,
        messages: list[tuple[str, str, str]],
        params: dict,
        hashes: dict,
    ) -> None:
        """Store a question and its answer together: ``messages`` as (role, text, model) in order, and one
        "chat" audit entry (``params``, ``hashes``) committed with them."""
        with self.transaction() as db:
            for role, text, model in messages:
                _insert_chat_message(db, expl_id, sample_id, role, text, model)
            self.audit("chat", params, hashes)

    def chat_messages(self, expl_id: int | None, sample_id: int | None) -> list[sqlite3.Row]:
        """The transcript of one conversation (an image, of an explanation or of none), oldest first."""
        return self.db.execute(
            "SELECT * FROM chat_messages WHERE explanation_id IS ? AND sample_id IS ? ORDER BY id",
            (expl_id, sample_id),
        ).fetchall()


def _insert_chat_message(
    db: sqlite3.Connection, expl_id: int | None, sample_id: int | None, role: str, text: str, model: str
) -> int:
    """One row of a chat transcript, by the user running the program now; returns its id."""
    cur = db.execute(
        "INSERT INTO chat_messages (explanation_id, sample_id, role, text, model, created, author) "
        "VALUES (?,?,?,?,?,?,?)",
        (expl_id, sample_id, role, text, model, time.time(), current_user()),
    )
    return int(cur.lastrowid)
