"""Demo upstream for the broker's quick start: a small notes store.

The tools carry MCP annotations so policies can key on them: the three readers are
``readOnlyHint: true``, ``write_note`` is a non-destructive idempotent write, and
``delete_note`` / ``archive_all`` are ``destructiveHint: true`` (the quick start lets
read-only tools through and sends destructive ones for approval). Annotations are hints
from the server, not guarantees; a broker decides what to trust.

    python examples/notes_server.py                                  # stdio
    python examples/notes_server.py --transport http --port 8801     # http://127.0.0.1:8801/mcp
    python examples/notes_server.py --transport sse --port 8801      # http://127.0.0.1:8801/sse
    python examples/notes_server.py --data-dir ./notes               # persist notes as JSON files

Notes live in memory, seeded with three notes, unless ``--data-dir`` is given: then each
note is ``<data-dir>/<note_id>.json`` and archived notes move to ``<data-dir>/archive/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from _serve import make_parser, serve
from mcp.server.mcpserver import MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
)
from mcp_types import ToolAnnotations as Hints

SEED_NOTES = {
    "welcome": "Welcome to the notes demo.\nEvery tool call you make here went through the broker.",
    "groceries": "Groceries\nMilk, eggs, coffee beans, lemons.",
    "meeting": "Meeting notes\nTuesday 10:00: review the approval flow for destructive tools.",
}
NOTE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # also keeps --data-dir file names safe
NOTE_TEMPLATE = "notes://note/{note_id}"

# The annotation sets the policy examples rely on.
READ = Hints(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = Hints(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
DESTROY = Hints(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


class NoteStore:
    """Notes by id, optionally mirrored to one JSON file per note."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.notes: dict[str, str] = {}
        self.archived: dict[str, str] = {}
        if data_dir is not None and data_dir.is_dir() and any(data_dir.glob("*.json")):
            for path in sorted(data_dir.glob("*.json")):
                self.notes[path.stem] = json.loads(path.read_text(encoding="utf-8"))["text"]
        else:
            for note_id, text in SEED_NOTES.items():
                self.put(note_id, text)

    def get(self, note_id: str) -> str:
        """Return the note's text; a ToolError (an ``isError`` result, not a protocol error) if unknown."""
        if note_id not in self.notes:
            raise ToolError(f"Unknown note: {note_id!r}")
        return self.notes[note_id]

    def put(self, note_id: str, text: str) -> None:
        if not NOTE_ID.fullmatch(note_id):
            raise ToolError("note_id must be 1-64 letters, digits, '_' or '-'")
        self.notes[note_id] = text
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.data_dir / f"{note_id}.json", {"id": note_id, "text": text})

    def delete(self, note_id: str) -> None:
        self.get(note_id)
        del self.notes[note_id]
        if self.data_dir is not None:
            (self.data_dir / f"{note_id}.json").unlink(missing_ok=True)

    def archive_all(self) -> int:
        count = len(self.notes)
        if self.data_dir is not None:
            (self.data_dir / "archive").mkdir(parents=True, exist_ok=True)
            for note_id in self.notes:
                os.replace(self.data_dir / f"{note_id}.json", self.data_dir / "archive" / f"{note_id}.json")
        self.archived.update(self.notes)
        self.notes.clear()
        return count

    def matching(self, prefix: str) -> list[str]:
        return sorted(note_id for note_id in self.notes if note_id.startswith(prefix))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _title(text: str) -> str:
    return text.splitlines()[0] if text else ""


def build_server(data_dir: Path | None = None) -> MCPServer[Any]:
    store = NoteStore(data_dir)
    mcp = MCPServer(
        "notes",
        version="1.0.0",
        instructions="A notes store. Read freely; deleting and archiving are destructive.",
        log_level="WARNING",
    )

    # --- tools: three read-only, one write, two destructive ---

    @mcp.tool(title="List notes", annotations=READ)
    async def list_notes() -> list[str]:
        """List the ids of all notes."""
        return sorted(store.notes)

    @mcp.tool(title="Read a note", annotations=READ)
    async def read_note(note_id: str) -> str:
        """Return the text of one note."""
        return store.get(note_id)

    @mcp.tool(title="Search notes", annotations=READ)
    async def search_notes(query: str) -> list[str]:
        """Return the ids of notes whose text contains the query (case-insensitive)."""
        needle = query.casefold()
        return sorted(note_id for note_id, text in store.notes.items() if needle in text.casefold())

    @mcp.tool(title="Write a note", annotations=WRITE)
    async def write_note(note_id: str, text: str) -> str:
        """Create or replace a note."""
        store.put(note_id, text)
        return f"Saved note {note_id!r} ({len(text)} characters)."

    @mcp.tool(title="Delete a note", annotations=DESTROY)
    async def delete_note(note_id: str) -> str:
        """Delete one note permanently."""
        store.delete(note_id)
        return f"Deleted note {note_id!r}."

    @mcp.tool(title="Archive all notes", annotations=DESTROY)
    async def archive_all() -> str:
        """Move every note out of the store into the archive."""
        return f"Archived {store.archive_all()} notes."

    # --- resources: a static index and a template per note ---

    @mcp.resource("notes://index", name="index", mime_type="application/json")
    def index() -> str:
        """Ids and titles (first lines) of all notes."""
        return json.dumps(
            [{"id": note_id, "title": _title(text)} for note_id, text in sorted(store.notes.items())]
        )

    @mcp.resource(NOTE_TEMPLATE, name="note", mime_type="text/plain")
    def note(note_id: str) -> str:
        """The text of one note."""
        if note_id not in store.notes:
            raise ResourceNotFoundError(f"Unknown note: {note_id!r}")
        return store.notes[note_id]

    # --- a prompt, and completions for its argument and the template's ---

    @mcp.prompt(title="Summarize a note")
    def summarize_note(note_id: str) -> list[UserMessage]:
        """Ask the model for a one-sentence summary of a note."""
        if note_id not in store.notes:
            raise ValueError(f"Unknown note: {note_id!r}")
        return [UserMessage(f"Summarize this note in one sentence:\n\n{store.notes[note_id]}")]

    @mcp.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # the SDK decorator is untyped
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        """Complete ``note_id`` from the ids in the store, for the prompt and the template."""
        wants_note = (isinstance(ref, PromptReference) and ref.name == "summarize_note") or (
            isinstance(ref, ResourceTemplateReference) and ref.uri == NOTE_TEMPLATE
        )
        if not wants_note or argument.name != "note_id":
            return None
        values = store.matching(argument.value)
        return Completion(values=values[:100], total=len(values), has_more=len(values) > 100)

    return mcp


def main() -> None:
    parser = make_parser("Demo notes MCP server.", default_port=8801)
    parser.add_argument("--data-dir", type=Path, help="persist notes as JSON files in this directory")
    args = parser.parse_args()
    serve(build_server(args.data_dir), args)


if __name__ == "__main__":
    main()
