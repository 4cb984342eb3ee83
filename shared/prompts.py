"""The only place prompts are formatted. Training, evaluation and serving all call these functions, and
every artifact records PROMPT_VERSION, so a served adapter sees exactly the text it was trained on.

Change a template -> bump PROMPT_VERSION (serving refuses adapters whose version it cannot render).
"""

from __future__ import annotations

PROMPT_VERSION = "1"
SUPPORTED_VERSIONS = ("1",)

# The prompt ends with a newline and the completion starts a new line: prompt and completion are
# tokenized apart and concatenated, so no BPE merge ever straddles the boundary.
SQL_TEMPLATE = "### Task: SQLite query\n### Schema:\n{schema}\n### Question: {question}\n### SQL:\n"
CODE_TEMPLATE = "### Task: Python code\n### Instruction: {instruction}\n{input_block}### Python:\n"


def sql_prompt(question: str, schema: str) -> str:
    """question + CREATE TABLE statements -> the prompt; the model writes one SQL query after it."""
    return SQL_TEMPLATE.format(schema=schema.strip(), question=" ".join(question.split()))


def code_prompt(instruction: str, input: str | None = None) -> str:
    """An alpaca-style instruction (and optional input) -> the prompt; the model writes Python after it."""
    input_block = f"### Input:\n{input.strip()}\n" if input and input.strip() else ""
    return CODE_TEMPLATE.format(instruction=" ".join(instruction.split()), input_block=input_block)


def prompt_for(task: str, example: dict) -> str:
    """The prompt of one normalized example (the loaders' field names)."""
    if task == "sql":
        return sql_prompt(example["question"], example["context"])
    if task == "code":
        return code_prompt(example["instruction"], example.get("input"))
    raise ValueError(f"unknown task {task!r}; expected 'sql' or 'code'")


def completion_for(task: str, example: dict) -> str:
    """The target text of one example; the EOS token is appended by the tokenizing code, not here."""
    if task == "sql":
        return " ".join(example["answer"].strip().rstrip(";").split())
    if task == "code":
        return example["output"].strip("\n")
    raise ValueError(f"unknown task {task!r}; expected 'sql' or 'code'")


def extract_answer(task: str, generated: str) -> str:
    """Cuts a generation down to the answer: the first statement for SQL, code up to a new section."""
    text = generated.split("###", 1)[0]
    if task == "sql":
        text = text.strip().split(";", 1)[0]
        return " ".join(text.split())
    return text.strip("\n").rstrip()
