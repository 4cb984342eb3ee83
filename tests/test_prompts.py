from shared.prompts import PROMPT_VERSION, completion_for, extract_answer, prompt_for, sql_prompt

EX = {
    "question": "How many  employees have city Paris?",
    "context": "CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT, city TEXT);",
    "answer": "SELECT COUNT(*)\n FROM employees WHERE city = 'Paris';",
}


def test_sql_prompt_holds_schema_and_question_and_ends_with_the_cue():
    p = prompt_for("sql", EX)
    assert EX["context"] in p
    assert "How many employees have city Paris?" in p  # whitespace normalized
    assert p.endswith("### SQL:\n")
    assert p == sql_prompt(EX["question"], EX["context"])


def test_completion_is_one_line_without_semicolon():
    assert completion_for("sql", EX) == "SELECT COUNT(*) FROM employees WHERE city = 'Paris'"


def test_code_prompt_with_and_without_input():
    a = prompt_for("code", {"instruction": "Write f.", "input": ""})
    b = prompt_for("code", {"instruction": "Write f.", "input": "f(2) == 4"})
    assert "### Input" not in a and "### Input:\nf(2) == 4\n" in b
    assert a.endswith("### Python:\n") and b.endswith("### Python:\n")


def test_extract_answer_cuts_at_first_statement_or_section():
    assert extract_answer("sql", " SELECT 1; DROP TABLE x") == "SELECT 1"
    assert extract_answer("sql", "SELECT a FROM t\n### Question: more") == "SELECT a FROM t"
    assert extract_answer("code", "def f():\n    return 1\n### Task: x") == "def f():\n    return 1"


def test_version_is_recorded_string():
    assert isinstance(PROMPT_VERSION, str) and PROMPT_VERSION


# ------------------------------------------------------------------------------------------- the chat format

# ChatML, as SmolLM2-Instruct's tokenizer carries it (its BOS is <|im_start|>, its EOS <|im_end|>)
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
          " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class _Tok:
    """The parts of a tokenizer the prompt code reads: a chat template, BOS, and encoding."""

    def __init__(self, chat_template=None, bos="<s>"):
        self.chat_template, self.bos = chat_template, bos
        self.bos_token_id = None if bos is None else 1

    def __call__(self, text, add_special_tokens=False):
        ids = []
        while text:
            if self.bos and text.startswith(self.bos):
                ids.append(1)
                text = text[len(self.bos):]
            else:
                ids.append(100 + ord(text[0]))
                text = text[1:]
        return {"input_ids": ids}


def test_chat_format_renders_the_task_through_the_models_template_and_records_it_in_the_version():
    import pytest

    from shared.prompts import CHAT_VERSION, PromptError, prompt_format, supported

    fmt = prompt_format("chat", _Tok(CHATML))
    p = fmt.prompt("sql", EX)
    assert p.startswith("<|im_start|>system\n") and p.endswith("<|im_start|>assistant\n")
    assert EX["context"] in p and "Question: How many employees have city Paris?" in p
    assert fmt.version.startswith(CHAT_VERSION + ":") and supported(fmt.version) and len(fmt.version) == 19
    assert fmt.completion("sql", EX) == completion_for("sql", EX)  # the answer text is the same in both formats
    code = fmt.prompt("code", {"instruction": "Write f.", "input": "f(2) == 4"})
    assert "Write f.\n\nInput:\nf(2) == 4<|im_end|>" in code
    assert fmt.stops == ()  # the chat answer ends at the EOS (end of turn), not at '###'
    other = prompt_format("chat", _Tok(CHATML.replace("'\n'}}", "'\n\n'}}")))
    assert other.version != fmt.version  # another template is another version
    with pytest.raises(PromptError, match="chat template"):
        prompt_format("chat", _Tok(None))  # a base model without a template cannot be chat-prompted


def test_a_card_version_is_rendered_only_with_the_template_it_was_trained_with():
    import pytest

    from shared.prompts import PLAIN, PromptError, format_of, prompt_format, supported

    fmt = prompt_format("chat", _Tok(CHATML))
    assert format_of(fmt.version, _Tok(CHATML)) == fmt
    assert format_of(PROMPT_VERSION, _Tok(CHATML)) is PLAIN  # a plain-trained adapter of an instruct base
    with pytest.raises(PromptError, match="not the one trained with"):
        format_of(fmt.version, _Tok(CHATML.replace("assistant", "bot")))
    with pytest.raises(PromptError, match="not one this code renders"):
        format_of("2", _Tok(CHATML))
    assert not supported("chat-1:") and not supported("chat-9:0123456789ab") and not supported(None)


def test_the_bos_token_is_added_once():
    from shared.prompts import prompt_format, prompt_ids

    tok = _Tok(CHATML, bos="<|im_start|>")
    ids = prompt_ids(tok, prompt_format("chat", tok).prompt("sql", EX))
    assert ids[0] == 1 and ids[1] != 1  # the template writes its own <|im_start|>: not doubled
    assert prompt_ids(_Tok(), "SELECT")[:2] == [1, 100 + ord("S")]  # plain text gets the BOS first
    assert prompt_ids(_Tok(bos=None), "SELECT")[0] == 100 + ord("S")  # a tokenizer without one gets none


def test_answers_are_taken_from_inside_a_code_fence():
    from shared.prompts import prompt_format

    chat = prompt_format("chat", _Tok(CHATML))
    assert chat.answer("sql", "Here it is:\n```sql\nSELECT name\nFROM t;\n```\nThis lists names.") == "SELECT name FROM t"
    assert chat.answer("code", "```python\ndef f():\n    return 1\n```\nUse f().") == "def f():\n    return 1"
    assert chat.answer("sql", "```\nSELECT 1") == "SELECT 1"  # a fence cut by max_tokens
    assert chat.answer("sql", "SELECT a FROM t ### b") == "SELECT a FROM t ### b"  # '###' ends plain answers only
    assert extract_answer("sql", "```sql\nSELECT 2;\n```") == "SELECT 2"


def test_a_chat_prompted_trial_of_a_base_without_a_template_stops_before_loading_the_model(tiny_model_dir, capsys):
    from pathlib import Path

    from shared.trial import main

    rc = main(["--config", str(Path(__file__).resolve().parent.parent / "configs/sql_micro_smoke.yaml"), f"model.name_or_path={tiny_model_dir}",
               "model.prompt_format=chat"])
    assert rc == 2 and "model.prompt_format: 'chat' needs a tokenizer with a chat template" in capsys.readouterr().err
