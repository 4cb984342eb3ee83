"""The only place prompts are formatted. Training, evaluation and serving all call these functions, and
every artifact records its format's version, so a served adapter sees exactly the text it was trained on.

Two formats (model.prompt_format):
- "plain": our own "### Task ..." sections, for base models (the embedded micro Llama, Llama-2): version "1".
- "chat": the task as a system and a user message, rendered through the model's own chat template (an instruct
  model such as SmolLM2-Instruct); the answer is the assistant's message, ended by the template's end-of-turn
  token (the tokenizer's EOS). Version "chat-1:<sha256 of the template, 12 hex>": an adapter is only served
  with the very template it was trained with.

Change a template or the messages -> bump the version (serving refuses adapters whose version it cannot render).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from shared.config import ConfigError

PROMPT_VERSION = "1"  # the plain format's
CHAT_VERSION = "chat-1"  # the chat format's messages; the template's digest follows it
SUPPORTED_VERSIONS = (PROMPT_VERSION, f"{CHAT_VERSION}:<template sha256>")

# The prompt ends with a newline and the completion starts a new line: prompt and completion are
# tokenized apart and concatenated, so no BPE merge ever straddles the boundary.
SQL_TEMPLATE = "### Task: SQLite query\n### Schema:\n{schema}\n### Question: {question}\n### SQL:\n"
CODE_TEMPLATE = "### Task: Python code\n### Instruction: {instruction}\n{input_block}### Python:\n"
SECTION_END = "###"  # where a plain-format answer ends: the next section would start

SQL_SYSTEM = ("You write SQLite queries. Given the CREATE TABLE statements of a database and a question, answer "
              "with one SQL query that answers it, and nothing else.")
CODE_SYSTEM = "You write Python code. Answer with the code only: no explanation, no example usage."


class PromptError(ConfigError):
    """A prompt format that cannot be rendered here: no chat template, or not the template trained with."""


def sql_prompt(question: str, schema: str) -> str:
    """question + CREATE TABLE statements -> the plain prompt; the model writes one SQL query after it."""
    return SQL_TEMPLATE.format(schema=schema.strip(), question=" ".join(question.split()))


def code_prompt(instruction: str, input: str | None = None) -> str:
    """An alpaca-style instruction (and optional input) -> the plain prompt; the model writes Python after it."""
    input_block = f"### Input:\n{input.strip()}\n" if input and input.strip() else ""
    return CODE_TEMPLATE.format(instruction=" ".join(instruction.split()), input_block=input_block)


def template_digest(chat_template: str) -> str:
    return hashlib.sha256(chat_template.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PromptFormat:
    """How a task example becomes the model's text. Built from the config and the tokenizer (training,
    evaluation) or from an adapter card's version and the adapter's tokenizer (serving): the same text both ways."""

    version: str
    chat_template: str | None = None  # the chat format's template, as the tokenizer holds it

    @property
    def chat(self) -> bool:
        return self.chat_template is not None

    @property
    def stops(self) -> tuple[str, ...]:
        """Text that ends an answer besides the EOS token (the chat format's end of turn is the EOS)."""
        return () if self.chat else (SECTION_END,)

    def messages(self, task: str, example: dict) -> list[dict]:
        if task == "sql":
            user = f"Schema:\n{example['context'].strip()}\n\nQuestion: {' '.join(example['question'].split())}"
            return [{"role": "system", "content": SQL_SYSTEM}, {"role": "user", "content": user}]
        if task == "code":
            user = " ".join(example["instruction"].split())
            if (example.get("input") or "").strip():
                user += f"\n\nInput:\n{example['input'].strip()}"
            return [{"role": "system", "content": CODE_SYSTEM}, {"role": "user", "content": user}]
        raise ValueError(f"unknown task {task!r}; expected 'sql' or 'code'")

    def prompt(self, task: str, example: dict) -> str:
        """The prompt of one normalized example (the loaders' field names)."""
        if self.chat:
            from transformers.utils.chat_template_utils import render_jinja_template

            rendered, _ = render_jinja_template([self.messages(task, example)], chat_template=self.chat_template,
                                                add_generation_prompt=True)
            return rendered[0]
        if task == "sql":
            return sql_prompt(example["question"], example["context"])
        if task == "code":
            return code_prompt(example["instruction"], example.get("input"))
        raise ValueError(f"unknown task {task!r}; expected 'sql' or 'code'")

    def completion(self, task: str, example: dict) -> str:
        """The target text of one example; the EOS token (the chat format's end of turn) is appended by the
        tokenizing code, not here."""
        if task == "sql":
            return " ".join(example["answer"].strip().rstrip(";").split())
        if task == "code":
            return example["output"].strip("\n")
        raise ValueError(f"unknown task {task!r}; expected 'sql' or 'code'")

    def answer(self, task: str, generated: str) -> str:
        """Cuts a generation down to the answer: the first statement for SQL, code up to a new section. A
        fenced block (```sql ... ```), as instruct models write, is taken from inside its fence."""
        text = fenced(generated)
        if not self.chat:
            text = text.split(SECTION_END, 1)[0]
        if task == "sql":
            text = text.strip().split(";", 1)[0]
            return " ".join(text.split())
        return text.strip("\n").rstrip()


PLAIN = PromptFormat(PROMPT_VERSION)
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.S)


def fenced(text: str) -> str:
    """The inside of the first ``` fence, or the text as it is when it has none."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def prompt_format(kind: str, tokenizer) -> PromptFormat:
    """model.prompt_format ("plain" or "chat") with the model's tokenizer -> the format trained and evaluated with."""
    if kind == "plain":
        return PLAIN
    if kind != "chat":
        raise PromptError(f"model.prompt_format: {kind!r} is not 'plain' or 'chat'")
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template.strip():
        raise PromptError("model.prompt_format: 'chat' needs a tokenizer with a chat template, and this model's has "
                          "none; use 'plain'")
    return PromptFormat(f"{CHAT_VERSION}:{template_digest(template)}", template)


def format_of(version: str, tokenizer) -> PromptFormat:
    """An adapter card's prompt version with the adapter's tokenizer -> its format, or PromptError when this code
    cannot render it exactly as trained."""
    if version == PROMPT_VERSION:
        return PLAIN
    if isinstance(version, str) and version.startswith(f"{CHAT_VERSION}:"):
        fmt = prompt_format("chat", tokenizer)
        if fmt.version != version:
            raise PromptError(f"prompt_version {version!r}: the tokenizer's chat template is not the one trained with "
                              f"({fmt.version})")
        return fmt
    raise PromptError(f"prompt_version {version!r} is not one this code renders ({', '.join(SUPPORTED_VERSIONS)})")


def supported(version) -> bool:
    """Whether this code can render the version at all (the template itself is checked with a tokenizer)."""
    return version == PROMPT_VERSION or (isinstance(version, str) and version.startswith(f"{CHAT_VERSION}:")
                                         and len(version) == len(CHAT_VERSION) + 13)


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A prompt's token ids as the model sees them in training, evaluation and serving: the BOS token first,
    unless the text already starts with it (a chat template writes its own)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return ids if bos is None or ids[:1] == [bos] else [bos] + ids


# The plain format, as functions: what tests and the plain-prompted callers use.
def prompt_for(task: str, example: dict, fmt: PromptFormat = PLAIN) -> str:
    return fmt.prompt(task, example)


def completion_for(task: str, example: dict, fmt: PromptFormat = PLAIN) -> str:
    return fmt.completion(task, example)


def extract_answer(task: str, generated: str, fmt: PromptFormat = PLAIN) -> str:
    return fmt.answer(task, generated)
