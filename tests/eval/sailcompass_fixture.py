"""A stand-in SailCompass checkout and `Sailcompass_data` download, written by us in SailCompass' formats (its config
layout, loader and evaluator constants, data files) with our own text: M3Exam vi (a Cyrillic "В" answer and
option) / jv (lower-case letters) / th (Thai-digit answers) generation, M3Exam vi PPL, XQuAD th, TyDi QA id, FLORES
en→th, XCOPA th PPL, Belebele th PPL."""

from __future__ import annotations

import json
from pathlib import Path

HEAD = """from opencompass.openicl.icl_prompt_template import PromptTemplate
from opencompass.openicl.icl_retriever import ZeroRetriever
from opencompass.openicl.icl_inferencer import GenInferencer, PPLInferencer
from opencompass.datasets import {dataset}, {evaluator}

reader_cfg = dict(input_columns={inputs!r}, output_column={output!r})
system_prompt = '''{system}\\n'''
exp_1 = '''{exp1}'''
ans_1 = '''{ans1}\\n'''
prompt_input = '''{query}'''
"""
GEN = HEAD + """prompt_output = '''{label}'''
infer_cfg = dict(
    prompt_template=dict(type=PromptTemplate, template=dict(
        begin=[dict(role='SYSTEM', fallback_role='HUMAN', prompt=system_prompt)],
        round=[dict(role='HUMAN', prompt=exp_1), dict(role='BOT', prompt=ans_1),
               dict(role='HUMAN', prompt=prompt_input), dict(role='BOT', prompt=prompt_output)])),
    retriever=dict(type=ZeroRetriever),
    inferencer=dict(type=GenInferencer, generation_kwargs=dict(do_sample=False), max_out_len={max_out}))
"""
PPL = HEAD + """infer_cfg = dict(
    prompt_template=dict(type=PromptTemplate, template={{
        {key}: dict(
            begin=[dict(role='SYSTEM', fallback_role='HUMAN', prompt=system_prompt)],
            round=[dict(role='HUMAN', prompt=exp_1), dict(role='BOT', prompt=ans_1),
                   dict(role='HUMAN', prompt=prompt_input), dict(role='BOT', prompt={answer})])
        for ans in {labels}}}),
    retriever=dict(type=ZeroRetriever),
    inferencer=dict(type=PPLInferencer, generation_kwargs=dict(do_sample=False)))
"""
TAIL = """eval_cfg = dict(evaluator=dict(type={evaluator}), pred_role='BOT')
x_datasets = [dict(type={dataset}, abbr={abbr!r}, path={path!r}, reader_cfg=reader_cfg, infer_cfg=infer_cfg,
                   eval_cfg=eval_cfg)]
"""

CONFIGS = {
    "m3exam/m3exam_vi_a1.py": GEN.format(
        dataset="M3EXAMVIDataset", evaluator="M3examEmEvaluator", inputs=["question_text", "full_options"],
        output="answer_text", system="Chọn đáp án đúng.", exp1="Hỏi: 1 + 1 = ?\nA. 2\nB. 3", ans1="Đáp: A",
        query="Hỏi: {question_text}\n{full_options}", label="Đáp:", max_out=10)
    + TAIL.format(evaluator="M3examEmEvaluator", dataset="M3EXAMVIDataset", abbr="m3exam-vi",
                  path="./data/m3exam/vietnamese-questions-test.json"),
    "m3exam/m3exam_jv_b2.py": GEN.format(
        dataset="M3EXAMJvDataset", evaluator="M3examEmEvaluator", inputs=["question_text", "full_options"],
        output="answer_text", system="Pilih wangsulan.", exp1="Pitakon: Siji tambah siji?\nA. Loro\nB. Telu",
        ans1="Wangsulan: A", query="Pitakon: {question_text}\n{full_options}", label="Wangsulan:", max_out=10)
    + TAIL.format(evaluator="M3examEmEvaluator", dataset="M3EXAMJvDataset", abbr="m3exam-id",
                  path="./data/m3exam/javanese-questions-test.json"),
    "m3exam/m3exam_th_c3.py": GEN.format(
        dataset="M3EXAMTHDataset", evaluator="M3examThEvaluator", inputs=["question_text", "full_options"],
        output="answer", system="เลือกคำตอบ", exp1="ถาม: หนึ่งบวกหนึ่ง\n1. สอง\n2. สาม", ans1="ตอบ: 1",
        query="ถาม: {question_text}\n{full_options}", label="ตอบ:", max_out=10)
    + TAIL.format(evaluator="M3examThEvaluator", dataset="M3EXAMTHDataset", abbr="m3exam-th",
                  path="./data/m3exam/thai-questions-test.json"),
    "m3exam/m3exam_vi_ppl4_d4.py": PPL.format(
        dataset="M3EXAMVIDataset", evaluator="M3examEmEvaluator",
        inputs=["question_text", "options_0", "options_1", "options_2", "options_3"], output="answer_text",
        system="Trả lời theo mẫu.", exp1="Hỏi: Thủ đô của Pháp?", ans1="Đáp: Paris",
        query="Hỏi: {question_text}", key="chr(65+ans)", answer="f'Đáp: {{options_{ans}}}'", labels="range(4)")
    + TAIL.format(evaluator="M3examEmEvaluator", dataset="M3EXAMVIDataset", abbr="m3exam-vi-ppl-4",
                  path="./data/m3exam/vietnamese-questions-test-4.json"),
    "xquad/xquad_th_e5.py": GEN.format(
        dataset="XQUADDataset", evaluator="AnsEvaluator", inputs=["context", "question"], output="answer",
        system="อ่านแล้วตอบ", exp1="เรื่อง: แมวกินปลา\nถาม: แมวกินอะไร", ans1="ตอบ: ปลา",
        query="เรื่อง: {context}\nถาม: {question}", label="ตอบ:", max_out=24)
    + TAIL.format(evaluator="AnsEvaluator", dataset="XQUADDataset", abbr="xquad-th",
                  path="./data/xquad/xquad_th.json"),
    "tydiqa_id/tydiqa_id_f6.py": GEN.format(
        dataset="TydiqaIdDataset", evaluator="TydiqaIdEvaluator", inputs=["context", "question"], output="answer",
        system="Baca dan jawab.", exp1="Teks: Budi makan nasi.\nTanya: Budi makan apa?", ans1="Jawab: nasi",
        query="Teks: {context}\nTanya: {question}", label="Jawab:", max_out=16)
    + TAIL.format(evaluator="TydiqaIdEvaluator", dataset="TydiqaIdDataset", abbr="tydiqa-id",
                  path="./data/tydiqa_id/validation.jsonl"),
    "flores200/flores_en_th_g7.py": GEN.format(
        dataset="Flores200Dataset", evaluator="TextGenEvaluator", inputs=["source"], output="target",
        system="แปลเป็นภาษาไทย", exp1="EN: Good morning.", ans1="TH: สวัสดีตอนเช้า", query="EN: {source}",
        label="TH:", max_out=24)
    + TAIL.format(evaluator="TextGenEvaluator", dataset="Flores200Dataset", abbr="flores-en-th",
                  path="./data/flores200/tha_Thai_devtest.jsonl"),
    "xcopa/xcopa_th_ppl_h8.py": PPL.format(
        dataset="XCOPASDataset", evaluator="AnsEvaluator",
        inputs=["question", "premise", "choice1", "choice2", "full_question"], output="answer",
        system="อ่านแล้วเลือก", exp1="เหตุ: ฝนตก\nถาม: ผล?", ans1="ตอบ: ถนนเปียก",
        query="เหตุ: {premise}\nถาม: {full_question}", key="ans",
        answer="'ตอบ: {{choice{ans}}}'.format(ans=int(ans)+1)", labels="['0', '1']")
    + TAIL.format(evaluator="AnsEvaluator", dataset="XCOPASDataset", abbr="xcopa-th",
                  path="./data/xcopa/th_test.jsonl"),
    "belebele/belebele_th_ppl_i9.py": PPL.format(
        dataset="BelebeleDataset", evaluator="BelebeleEvaluator",
        inputs=["flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4"],
        output="answer", system="อ่านบริบทแล้วตอบ", exp1="บริบท: ฟ้าสีฟ้า\nถาม: ฟ้าสีอะไร", ans1="ตอบ: ฟ้า",
        query="บริบท: {flores_passage}\nถาม: {question}", key="chr(ans+64)",
        answer="f'ตอบ: {{mc_answer{ans}}}'", labels="range(1, 5)")
    + TAIL.format(evaluator="BelebeleEvaluator", dataset="BelebeleDataset", abbr="belebele-th-ppl",
                  path="./data/belebele/tha_Thai.jsonl"),
}

POSTPROCESSORS = '''import re

def general_pred_postprocess(text: str) -> str:
    text = re.split(r'[\\n]', text, 1)[0]
    prompts = set([
        "ตอบ: ".lower(),
        "Đáp: ".lower(),
        "Jawab: ".lower(),
        "TH: ".lower(),
    ])
    return text


def first_option_parse(text: str, options: str, cushion=True) -> str:
    patterns = [
        f'[Aa]nswer:?\\s?([{options}])',
        f'^\\s*([{options}])[.)]?(\\s|$)',
        f'(\\s|^)[{options}](\\s|$)',
    ]
    cushion_patterns = [
        f'([{options}]):',
        f'[{options}]',
    ]
    return ''
'''
M3EXAM_PY = '''class M3examEmEvaluator:
    def score(self, predictions, references):
        prompts = set([
            "Hỏi: "
        ])


class M3examThEvaluator:
    def score(self, predictions, references):
        return {}
'''
XCOPA_PY = '''def load(path):
    def preprocess(example):
        trans = {'cause': {'th': 'เหตุ', 'vi': 'vì', 'id': 'sebab'},
                 'effect': {'th': 'ผล', 'vi': 'nên', 'id': 'akibat'}}
        example['trans_question'] = trans[example['question']]['th']
        trans = {'cause': {'th': 'เพราะอะไร?', 'vi': 'Vì sao?', 'id': 'Kenapa?'},
                 'effect': {'th': 'แล้วเป็นอย่างไร?', 'vi': 'Rồi sao?', 'id': 'Lalu?'}}
        example['full_question'] = trans[example['question']]['th']
        return example
'''
BELEBELE_PY = '''def load(path):
    lang = path
    def preprocess(example):
        if lang == 'tha':
            example['mc_answer5'] = 'ไม่ทราบ'
        elif lang == 'ind':
            example['mc_answer5'] = 'Tidak tahu.'
        return example


class BelebeleEvaluator:
    def score(self, predictions, references):
        prompts = set([
            "ถาม: ",
            "Answer: "
        ])
'''


def write_checkout(root: Path) -> Path:
    for rel, text in CONFIGS.items():
        (root / "configs" / "datasets" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "configs" / "datasets" / rel).write_text(text, encoding="utf-8")
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "sailor_text_postprocessors.py").write_text(POSTPROCESSORS, encoding="utf-8")
    (root / "datasets" / "m3exam.py").write_text(M3EXAM_PY, encoding="utf-8")
    (root / "datasets" / "xcopa_sea.py").write_text(XCOPA_PY, encoding="utf-8")
    (root / "datasets" / "belebele.py").write_text(BELEBELE_PY, encoding="utf-8")
    return root


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _json(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


VI = [{"question_text": "Thủ đô của Việt Nam là gì?", "options": ["A. Huế", "\u0412. Hà Nội", "C. Đà Nẵng"],
       "answer_text": "\u0412"},
      {"question_text": "2 × 3 = ? {không}", "options": ["A. 5", "B. 6", "C. . 7", "D. 8"], "answer_text": "B"}]
JV = [{"question_text": "Ibukutha Jawa Tengah yaiku …", "options": ["a. Semarang", "b. Surabaya", "c. Bandung"],
       "answer_text": "a"},
      {"question_text": "Tembung 'mangan' tegese ...", "options": ["a. turu", "b. madhang"], "answer_text": "b"}]
TH = [{"question_text": "เมืองหลวงของไทย", "options": ["1. เชียงใหม่", "2. กรุงเทพ", "3. ขอนแก่น"], "answer_text": "๒"},
      {"question_text": "สองบวกสอง", "options": ["1. สาม", "2. สี่"], "answer_text": "2"}]
VI4 = [{"question_text": "Con gì kêu meo meo?", "options": ["A. Chó", "B. Mèo", "C. Gà", "D. Vịt"],
        "answer_text": "B"},
       {"question_text": "Màu của lá cây?", "options": ["A. Xanh", "B. Đỏ", "\u0412. Tím", "D. Vàng"],
        "answer_text": "A"}]
XQUAD_TH = [{"context": "กรุงเทพเป็นเมืองหลวงของประเทศไทย", "question": "เมืองหลวงของไทยคืออะไร",
             "answer": "กรุงเทพมหานคร"},
            {"context": "ช้างเป็นสัตว์ใหญ่", "question": "สัตว์อะไรใหญ่", "answer": "ช้าง"}]
TYDIQA = [{"context": "Jakarta adalah ibu kota Indonesia.", "question": "Apa ibu kota Indonesia?",
           "answer": ["Jakarta", "kota Jakarta"]}]
FLORES = [{"source": "The cat sleeps.", "target": "แมวนอนหลับ"}, {"source": "I like rice.", "target": "ฉันชอบข้าว"}]
XCOPA = [{"premise": "แก้วตกพื้น", "choice1": "แก้วแตก", "choice2": "แก้วบิน", "question": "effect", "label": 0,
          "idx": 1},
         {"premise": "เขาหิว", "choice1": "เขากินข้าว", "choice2": "เขาไม่ได้กินข้าวมาทั้งวัน", "question": "cause",
          "label": 1, "idx": 2}]
BELEBELE = [{"flores_passage": "นกบินได้เพราะมีปีก", "question": "ทำไมนกบินได้", "mc_answer1": "มีขา",
             "mc_answer2": "มีปีก", "mc_answer3": "มีหาง", "mc_answer4": "มีปาก", "correct_answer_num": "2"}]


def write_data(root: Path) -> Path:
    _json(root / "m3exam" / "vietnamese-questions-test.json", VI)
    _json(root / "m3exam" / "javanese-questions-test.json", JV)
    _json(root / "m3exam" / "thai-questions-test.json", TH)
    _json(root / "m3exam" / "vietnamese-questions-test-4.json", VI4)
    _jsonl(root / "xquad" / "xquad_th.json", XQUAD_TH)
    _jsonl(root / "tydiqa_id" / "validation.jsonl", TYDIQA)
    _jsonl(root / "flores200" / "tha_Thai_devtest.jsonl", FLORES)
    _jsonl(root / "xcopa" / "th_test.jsonl", XCOPA)
    _jsonl(root / "belebele" / "tha_Thai.jsonl", BELEBELE)
    return root
