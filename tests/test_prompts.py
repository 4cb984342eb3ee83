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
