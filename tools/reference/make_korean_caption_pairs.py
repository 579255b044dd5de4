#!/usr/bin/env python3
"""Writes tests/fixtures/eval/korean_caption_pairs.jsonl: caption pairs of the AI-Hub kind (nature, city,
architecture scenes described in one or two sentences of 50-200 characters) for measuring the morpheme
METEOR against KoNLPy Okt (tools/reference/korean_meteor.py).

Each pair is a reference and a "generated" caption of the same scene. Both are drawn from the scene's pool
of hand-written clauses, with shared and different clauses, different connective endings, word-order changes
and a few swapped words, so the pairs score anywhere from near 0 to near 1, as a captioner's output does.
The sentences were written for this fixture; they are not taken from any data set. Seeded: the output
is the same on every run.

    python3 tools/reference/make_korean_caption_pairs.py [--pairs 240] [--seed 13] [--out PATH]
"""
import argparse
import json
import pathlib
import random

# Each clause is (subject phrase, predicate stem forms): the predicate is given as
# (connective form, final form) so clauses can be chained ("...고", "...며") or end a sentence.
SCENES = {
    "mountain": [
        ("짙은 안개가 산 중턱을", "감싸고", "감싸고 있다"),
        ("울긋불긋한 단풍이 능선을 따라", "물들어 있으며", "물들어 있다"),
        ("등산객 몇 명이 좁은 돌계단을", "오르고", "오르는 모습이다"),
        ("정상 부근의 바위 위로 구름이 천천히", "흘러가며", "흘러간다"),
        ("소나무 숲 사이로 햇빛이 비스듬히", "쏟아지고", "쏟아진다"),
        ("멀리 겹겹이 이어진 산봉우리들이 푸르스름하게", "보이며", "보인다"),
        ("산길 옆 계곡에서는 맑은 물이", "흐르고", "흐르고 있다"),
        ("눈 덮인 산등성이가 아침 햇살에", "반짝이며", "반짝인다"),
    ],
    "sea": [
        ("푸른 바다 위로 하얀 파도가", "부서지고", "부서지고 있다"),
        ("모래사장에는 관광객들이 파라솔 아래에서", "쉬고", "쉬고 있다"),
        ("수평선 너머로 붉은 해가 천천히", "지고", "지는 장면이다"),
        ("작은 어선 두 척이 항구를 향해", "들어오며", "들어온다"),
        ("갈매기 떼가 방파제 위를 낮게", "날아다니고", "날아다닌다"),
        ("바위 해안에 부딪힌 물보라가 높이", "솟구치며", "솟구친다"),
        ("썰물이 빠진 갯벌에서 사람들이 조개를", "캐고", "캐고 있다"),
        ("해안 도로를 따라 야자수가 길게", "늘어서 있고", "늘어서 있다"),
    ],
    "forest": [
        ("울창한 숲속 오솔길에 낙엽이 수북이", "쌓여 있고", "쌓여 있다"),
        ("키가 큰 삼나무들이 하늘을 향해 곧게", "뻗어 있으며", "뻗어 있다"),
        ("이끼 낀 바위 사이로 작은 개울이", "흐르고", "흐른다"),
        ("다람쥐 한 마리가 나무줄기를 빠르게", "타고 오르며", "타고 오른다"),
        ("나뭇잎 사이로 새어 든 햇빛이 땅 위에 얼룩을", "만들고", "만든다"),
        ("숲 가장자리에서 사슴 한 마리가 풀을", "뜯고", "뜯고 있다"),
        ("비가 그친 뒤 숲 전체에 옅은 물안개가", "피어오르며", "피어오른다"),
    ],
    "river": [
        ("넓은 강 위로 긴 철교가", "가로질러 있고", "가로질러 있다"),
        ("강변 산책로에서 시민들이 자전거를", "타고", "타고 있다"),
        ("잔잔한 호수 수면에 주변 산과 구름이 그대로", "비치며", "비친다"),
        ("오리 가족이 물가를 따라 줄지어", "헤엄치고", "헤엄친다"),
        ("폭포에서 쏟아진 물줄기가 하얀 물보라를", "일으키며", "일으킨다"),
        ("강둑에는 노란 유채꽃이 가득", "피어 있고", "피어 있다"),
        ("나룻배 한 척이 안개 낀 강을 천천히", "건너며", "건너간다"),
    ],
    "field": [
        ("황금빛으로 익은 벼가 들판 가득 바람에", "흔들리고", "흔들린다"),
        ("농부가 트랙터를 몰고 논두렁 옆을", "지나가며", "지나간다"),
        ("넓은 초원에서 양 떼가 한가롭게 풀을", "뜯고", "뜯고 있다"),
        ("해바라기 밭 너머로 낮은 언덕이 부드럽게", "이어지며", "이어진다"),
        ("허수아비 하나가 밭 한가운데에 홀로", "서 있고", "서 있다"),
        ("먹구름이 몰려오면서 들판 위로 굵은 빗방울이", "떨어지고", "떨어지기 시작한다"),
    ],
    "street": [
        ("퇴근 시간의 번화가에는 사람들이 바쁘게", "오가고", "오가고 있다"),
        ("횡단보도 앞에서 보행자들이 신호를", "기다리며", "기다린다"),
        ("차량들이 왕복 육 차선 도로를 따라 줄지어", "달리고", "달린다"),
        ("길가의 가로수들이 노랗게 물든 잎을", "떨어뜨리며", "떨어뜨린다"),
        ("상점 간판들이 밤이 되자 화려한 불빛을", "내뿜고", "내뿜는다"),
        ("배달 오토바이 한 대가 좁은 골목길을 빠르게", "빠져나가며", "빠져나간다"),
        ("비 오는 거리에서 우산을 쓴 사람들이 인도를", "걸어가고", "걸어간다"),
        ("버스 정류장에 시내버스가 멈춰 서자 승객들이", "내리고", "내린다"),
    ],
    "market": [
        ("전통 시장 골목에 채소와 과일을 파는 노점이 빽빽하게", "들어서 있고", "들어서 있다"),
        ("상인들이 큰 소리로 손님을", "부르며", "부른다"),
        ("좌판 위에는 갓 잡은 생선들이 얼음 위에", "놓여 있고", "놓여 있다"),
        ("손님들이 떡볶이를 파는 포장마차 앞에 길게 줄을", "서 있으며", "서 있다"),
        ("천장에 매달린 전구들이 좁은 통로를 은은하게", "비추고", "비춘다"),
        ("한 할머니가 수레에 물건을 싣고 천천히", "걸어가며", "걸어간다"),
    ],
    "night_city": [
        ("고층 빌딩의 창문마다 불빛이", "켜져 있고", "켜져 있다"),
        ("한강 다리 위를 지나는 자동차 불빛이 긴 궤적을", "그리며", "그린다"),
        ("도심의 야경이 강물에 반사되어 반짝이는 모습이", "보이고", "보인다"),
        ("광장 분수대 주변에서 젊은이들이 음악에 맞춰 춤을", "추고", "추고 있다"),
        ("전광판의 광고 화면이 빠르게", "바뀌며", "바뀐다"),
        ("지하철역 출구에서 사람들이 쏟아져", "나오고", "나온다"),
        ("늦은 밤 편의점 앞 테이블에 몇 사람이 모여", "앉아 있으며", "앉아 있다"),
    ],
    "park": [
        ("도심 공원의 잔디밭에서 아이들이 공을", "차고", "차며 뛰어논다"),
        ("벤치에 앉은 노부부가 비둘기에게 모이를", "주고", "주고 있다"),
        ("벚꽃이 만개한 산책로를 따라 연인들이 사진을", "찍으며", "찍는다"),
        ("공원 연못 위의 나무 다리를 가족들이", "건너고", "건너간다"),
        ("조깅하는 사람들이 호숫가 트랙을 따라", "달리며", "달린다"),
        ("놀이터의 그네와 미끄럼틀에서 어린이들이 즐겁게", "놀고", "놀고 있다"),
    ],
    "hanok": [
        ("오래된 한옥의 기와지붕 위로 하얀 눈이 소복이", "쌓여 있고", "쌓여 있다"),
        ("나무 기둥과 창호지 문이 줄지어 선 대청마루가", "보이며", "보인다"),
        ("한옥 마을 골목의 돌담길을 관광객들이 천천히", "걷고", "걷고 있다"),
        ("처마 끝에 매달린 풍경이 바람에 흔들리며 소리를", "내고", "낸다"),
        ("마당 한쪽에 놓인 장독대 위로 햇살이 따스하게", "내리쬐며", "내리쬔다"),
        ("한복을 입은 여행객들이 대문 앞에서 기념사진을", "찍고", "찍고 있다"),
    ],
    "palace": [
        ("궁궐 정문 앞에서 수문장 교대식이", "열리고", "열리고 있다"),
        ("단청이 화려하게 칠해진 전각의 처마가 하늘로", "휘어져 있으며", "휘어져 있다"),
        ("넓은 돌바닥 마당 너머로 웅장한 정전이", "자리 잡고 있고", "자리 잡고 있다"),
        ("궁궐 연못의 누각이 물 위에 비친 채 고요하게", "서 있으며", "서 있다"),
        ("돌계단 양옆의 해태 석상이 입구를", "지키고", "지키고 있다"),
        ("가을 단풍에 둘러싸인 궁궐 담장을 따라 사람들이", "산책하며", "산책한다"),
    ],
    "modern": [
        ("유리로 덮인 초고층 빌딩이 파란 하늘을 배경으로 우뚝", "솟아 있고", "솟아 있다"),
        ("곡선 형태의 현대 미술관 외벽이 햇빛을 받아 은색으로", "빛나며", "빛난다"),
        ("건설 현장에서 대형 크레인이 철골 구조물을", "들어 올리고", "들어 올린다"),
        ("아파트 단지 사이로 잘 정돈된 조경 공원이", "펼쳐져 있으며", "펼쳐져 있다"),
        ("대형 쇼핑몰 입구의 회전문으로 사람들이 드나들고", "있고", "있다"),
        ("강변에 늘어선 주상복합 건물들이 저녁노을에 붉게", "물들며", "물든다"),
        ("콘크리트와 나무를 섞어 지은 도서관 건물이 조용히", "서 있고", "서 있다"),
    ],
    "temple_bridge": [
        ("산사의 대웅전 앞마당에서 스님 한 분이 빗자루로 낙엽을", "쓸고", "쓸고 있다"),
        ("석탑 주위로 연등이 줄지어", "걸려 있으며", "걸려 있다"),
        ("오래된 돌다리가 계곡 위를 아치 모양으로", "가로지르고", "가로지른다"),
        ("성당의 높은 첨탑과 스테인드글라스 창이 석양에", "빛나며", "빛난다"),
        ("현수교의 주탑과 케이블이 안개 속에서 희미하게", "드러나고", "드러난다"),
        ("등대가 바다 쪽으로 튀어나온 방파제 끝에 홀로", "서 있고", "서 있다"),
    ],
}

OPENERS = ["", "", "", "이른 아침 ", "해 질 무렵 ", "맑은 날 ", "흐린 오후 ", "한여름 ", "늦가을 ", "겨울철 ",
           "비가 내린 뒤 ", "주말 오후 "]
ENDINGS_ALT = {"있다": ["있는 모습이다", "있다"], "다": ["다"]}
# Word swaps a generated caption makes (a captioner's near-misses).
SWAPS = [("사람들이", "시민들이"), ("천천히", "느릿느릿"), ("빠르게", "재빨리"), ("하얀", "흰"), ("작은", "조그만"),
         ("길게", "쭉"), ("푸른", "파란"), ("넓은", "드넓은"), ("오래된", "낡은"), ("관광객들이", "여행객들이"),
         ("높은", "커다란"), ("아이들이", "어린이들이"), ("바다", "바닷가"), ("모습이", "장면이")]


def sentence(clauses, opener):
    """Chains clauses with their connective forms; the last one takes its final form."""
    parts = [c[0] + " " + c[1] for c in clauses[:-1]] + [clauses[-1][0] + " " + clauses[-1][2]]
    return opener + " ".join(parts) + "."


def caption(rng, pool, k, opener):
    picks = rng.sample(pool, k)
    if k >= 3 and rng.random() < 0.5:  # two sentences
        cut = rng.randint(1, k - 1)
        return sentence(picks[:cut], opener) + " " + sentence(picks[cut:], "")
    return sentence(picks, opener)


def perturb(rng, text):
    for a, b in SWAPS:
        if a in text and rng.random() < 0.35:
            text = text.replace(a, b, 1)
    return text


def make_pair(rng, scene_pool, all_pools):
    while True:
        ref_clauses = rng.sample(scene_pool, rng.randint(2, 4))
        opener = rng.choice(OPENERS)
        reference = (sentence(ref_clauses, opener) if len(ref_clauses) < 3 or rng.random() < 0.5 else
                     sentence(ref_clauses[:2], opener) + " " + sentence(ref_clauses[2:], ""))
        # The generated caption keeps 0..all of the reference's clauses, in another order, with other
        # clauses of the same scene (or, rarely, another scene) filling in.
        keep = rng.randint(0, len(ref_clauses))
        kept = rng.sample(ref_clauses, keep)
        others = [c for c in scene_pool if c not in ref_clauses]
        if rng.random() < 0.1:
            others = rng.choice(all_pools)
        fill = rng.sample(others, min(len(others), rng.randint(max(0, 2 - keep), 2)))
        clauses = kept + fill
        rng.shuffle(clauses)
        if not clauses:
            continue
        generated = perturb(rng, sentence(clauses, rng.choice(OPENERS) if rng.random() < 0.5 else opener))
        if 50 <= len(reference) <= 200 and 50 <= len(generated) <= 200:
            return {"scene": None, "reference": reference, "candidate": generated}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=240)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[2] /
                                         "tests/fixtures/eval/korean_caption_pairs.jsonl"))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    names = sorted(SCENES)
    pools = [SCENES[n] for n in names]
    rows = []
    for i in range(a.pairs):
        name = names[i % len(names)]
        p = make_pair(rng, SCENES[name], pools)
        p["scene"] = name
        p["id"] = f"pair{i:04d}"
        rows.append({"id": p["id"], "scene": name, "reference": p["reference"], "caption": p["candidate"]})
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} pairs to {out}")


if __name__ == "__main__":
    main()
