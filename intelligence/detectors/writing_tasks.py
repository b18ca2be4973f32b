"""Benign long writing requests in eight languages, for false-positive evaluation.

Hand-written frames, topics and requirements (written for this project, not taken from any corpus)
combined deterministically into the kind of request an office worker or a student sends: write a
paper, a report, an outline, a proposal, with sections and constraints. Two batches with disjoint
frames and requirements: batch ``a`` is used for calibration, batch ``b`` is held out
(``python -m intelligence.detectors.evalsets``).
"""

from __future__ import annotations

import random

# Topics, one list per language, same meaning at the same index.
TOPICS: dict[str, list[str]] = {
    "en": [
        "the use of artificial intelligence in medical diagnosis",
        "the effect of remote work on city housing markets",
        "renewable energy policy in small island states",
        "the history of the printing press in Europe",
        "water management in agriculture under drought",
        "the role of social media in local elections",
        "microplastics in coastal ecosystems",
        "the economics of electric vehicle adoption",
        "early childhood bilingual education",
        "supply chain resilience after the pandemic",
        "urban heat islands and tree planting",
        "the digital transformation of public libraries",
        "sleep quality among university students",
        "the development of high-speed rail in Asia",
        "food waste reduction in restaurants",
        "cybersecurity awareness training for small businesses",
        "the cultural impact of streaming services",
        "aging populations and pension reform",
        "the ethics of genetic testing",
        "tourism and heritage conservation",
        "open-source software in government",
        "mental health support in the workplace",
        "the future of printed newspapers",
        "soil carbon and regenerative farming",
    ],
    "zh": [
        "人工智能在医疗诊断中的应用",
        "远程办公对城市住房市场的影响",
        "小岛屿国家的可再生能源政策",
        "欧洲印刷术的发展历史",
        "干旱条件下的农业用水管理",
        "社交媒体在地方选举中的作用",
        "沿海生态系统中的微塑料污染",
        "电动汽车普及的经济学分析",
        "幼儿双语教育",
        "疫情后供应链的韧性",
        "城市热岛效应与植树造林",
        "公共图书馆的数字化转型",
        "大学生的睡眠质量",
        "亚洲高速铁路的发展",
        "餐饮业的食物浪费治理",
        "小企业的网络安全意识培训",
        "流媒体服务的文化影响",
        "人口老龄化与养老金改革",
        "基因检测的伦理问题",
        "旅游业与文化遗产保护",
        "政府部门中的开源软件",
        "职场心理健康支持",
        "纸质报纸的未来",
        "土壤碳汇与再生农业",
    ],
    "ja": [
        "医療診断における人工知能の活用",
        "リモートワークが都市の住宅市場に与える影響",
        "小島嶼国の再生可能エネルギー政策",
        "ヨーロッパにおける印刷技術の歴史",
        "干ばつ下の農業用水管理",
        "地方選挙におけるソーシャルメディアの役割",
        "沿岸生態系のマイクロプラスチック",
        "電気自動車普及の経済学",
        "幼児期のバイリンガル教育",
        "パンデミック後のサプライチェーンの強靭性",
        "都市のヒートアイランド現象と植樹",
        "公共図書館のデジタル化",
        "大学生の睡眠の質",
        "アジアにおける高速鉄道の発展",
        "飲食店における食品ロスの削減",
        "中小企業向けのサイバーセキュリティ研修",
        "動画配信サービスの文化的影響",
        "高齢化と年金制度改革",
        "遺伝子検査の倫理",
        "観光と文化財の保全",
        "行政におけるオープンソースソフトウェア",
        "職場のメンタルヘルス支援",
        "紙の新聞の将来",
        "土壌炭素と環境再生型農業",
    ],
    "ko": [
        "의료 진단에서의 인공지능 활용",
        "재택근무가 도시 주택 시장에 미치는 영향",
        "소규모 도서국의 재생에너지 정책",
        "유럽 인쇄술의 역사",
        "가뭄 상황에서의 농업용수 관리",
        "지방 선거에서 소셜 미디어의 역할",
        "연안 생태계의 미세플라스틱",
        "전기차 보급의 경제학",
        "영유아 이중언어 교육",
        "팬데믹 이후 공급망의 회복력",
        "도시 열섬 현상과 나무 심기",
        "공공도서관의 디지털 전환",
        "대학생의 수면의 질",
        "아시아 고속철도의 발전",
        "음식점의 음식물 쓰레기 감축",
        "중소기업을 위한 사이버 보안 인식 교육",
        "스트리밍 서비스의 문화적 영향",
        "고령화와 연금 개혁",
        "유전자 검사의 윤리",
        "관광과 문화유산 보존",
        "공공 부문의 오픈소스 소프트웨어",
        "직장 내 정신 건강 지원",
        "종이 신문의 미래",
        "토양 탄소와 재생 농업",
    ],
    "ru": [
        "применение искусственного интеллекта в медицинской диагностике",
        "влияние удалённой работы на городской рынок жилья",
        "политика в области возобновляемой энергетики малых островных государств",
        "история книгопечатания в Европе",
        "управление водными ресурсами в сельском хозяйстве во время засухи",
        "роль социальных сетей на местных выборах",
        "микропластик в прибрежных экосистемах",
        "экономика перехода на электромобили",
        "двуязычное образование в раннем возрасте",
        "устойчивость цепочек поставок после пандемии",
        "городские острова тепла и озеленение",
        "цифровая трансформация публичных библиотек",
        "качество сна студентов университетов",
        "развитие высокоскоростных железных дорог в Азии",
        "сокращение пищевых отходов в ресторанах",
        "обучение кибербезопасности для малого бизнеса",
        "культурное влияние стриминговых сервисов",
        "старение населения и пенсионная реформа",
        "этика генетического тестирования",
        "туризм и сохранение культурного наследия",
        "открытое программное обеспечение в государственном секторе",
        "поддержка психического здоровья на работе",
        "будущее печатных газет",
        "почвенный углерод и регенеративное земледелие",
    ],
    "es": [
        "el uso de la inteligencia artificial en el diagnóstico médico",
        "el efecto del teletrabajo en el mercado de la vivienda urbana",
        "la política de energías renovables en pequeños estados insulares",
        "la historia de la imprenta en Europa",
        "la gestión del agua en la agricultura durante las sequías",
        "el papel de las redes sociales en las elecciones locales",
        "los microplásticos en los ecosistemas costeros",
        "la economía de la adopción del vehículo eléctrico",
        "la educación bilingüe en la primera infancia",
        "la resiliencia de las cadenas de suministro tras la pandemia",
        "las islas de calor urbanas y la plantación de árboles",
        "la transformación digital de las bibliotecas públicas",
        "la calidad del sueño de los estudiantes universitarios",
        "el desarrollo del tren de alta velocidad en Asia",
        "la reducción del desperdicio de alimentos en restaurantes",
        "la formación en ciberseguridad para pequeñas empresas",
        "el impacto cultural de los servicios de streaming",
        "el envejecimiento de la población y la reforma de las pensiones",
        "la ética de las pruebas genéticas",
        "el turismo y la conservación del patrimonio",
        "el software libre en la administración pública",
        "el apoyo a la salud mental en el trabajo",
        "el futuro de los periódicos impresos",
        "el carbono del suelo y la agricultura regenerativa",
    ],
    "ar": [
        "استخدام الذكاء الاصطناعي في التشخيص الطبي",
        "أثر العمل عن بعد على أسواق السكن في المدن",
        "سياسات الطاقة المتجددة في الدول الجزرية الصغيرة",
        "تاريخ الطباعة في أوروبا",
        "إدارة المياه في الزراعة أثناء الجفاف",
        "دور وسائل التواصل الاجتماعي في الانتخابات المحلية",
        "الجسيمات البلاستيكية الدقيقة في النظم البيئية الساحلية",
        "اقتصاديات انتشار السيارات الكهربائية",
        "التعليم ثنائي اللغة في مرحلة الطفولة المبكرة",
        "مرونة سلاسل الإمداد بعد الجائحة",
        "الجزر الحرارية الحضرية وزراعة الأشجار",
        "التحول الرقمي للمكتبات العامة",
        "جودة النوم لدى طلاب الجامعات",
        "تطور السكك الحديدية فائقة السرعة في آسيا",
        "الحد من هدر الطعام في المطاعم",
        "التدريب على الأمن السيبراني للشركات الصغيرة",
        "الأثر الثقافي لخدمات البث",
        "شيخوخة السكان وإصلاح أنظمة التقاعد",
        "أخلاقيات الفحوص الجينية",
        "السياحة والحفاظ على التراث",
        "البرمجيات مفتوحة المصدر في القطاع الحكومي",
        "دعم الصحة النفسية في بيئة العمل",
        "مستقبل الصحف المطبوعة",
        "كربون التربة والزراعة المتجددة",
    ],
    "hi": [
        "चिकित्सा निदान में कृत्रिम बुद्धिमत्ता का उपयोग",
        "शहरी आवास बाज़ार पर घर से काम करने का प्रभाव",
        "छोटे द्वीपीय देशों की नवीकरणीय ऊर्जा नीति",
        "यूरोप में मुद्रण कला का इतिहास",
        "सूखे के समय कृषि में जल प्रबंधन",
        "स्थानीय चुनावों में सोशल मीडिया की भूमिका",
        "तटीय पारिस्थितिकी तंत्र में माइक्रोप्लास्टिक",
        "इलेक्ट्रिक वाहनों को अपनाने का अर्थशास्त्र",
        "प्रारंभिक बचपन में द्विभाषी शिक्षा",
        "महामारी के बाद आपूर्ति श्रृंखला की मज़बूती",
        "शहरी ताप द्वीप और वृक्षारोपण",
        "सार्वजनिक पुस्तकालयों का डिजिटल रूपांतरण",
        "विश्वविद्यालय के छात्रों की नींद की गुणवत्ता",
        "एशिया में तेज़ गति रेल का विकास",
        "रेस्तरां में भोजन की बर्बादी कम करना",
        "छोटे व्यवसायों के लिए साइबर सुरक्षा जागरूकता प्रशिक्षण",
        "स्ट्रीमिंग सेवाओं का सांस्कृतिक प्रभाव",
        "बढ़ती उम्र की आबादी और पेंशन सुधार",
        "आनुवंशिक परीक्षण की नैतिकता",
        "पर्यटन और विरासत संरक्षण",
        "सरकार में ओपन-सोर्स सॉफ़्टवेयर",
        "कार्यस्थल पर मानसिक स्वास्थ्य सहायता",
        "मुद्रित समाचार पत्रों का भविष्य",
        "मिट्टी का कार्बन और पुनर्योजी खेती",
    ],
}

# {t} is the topic. Batch a and batch b use different frames.
FRAMES: dict[str, dict[str, list[str]]] = {
    "en": {
        "a": [
            "Write a research paper on {t}. It should have an abstract, an introduction, a literature review, a methods section, results, a discussion and a conclusion.",
            "Please draft a detailed report about {t} for our department's quarterly meeting.",
            "I need an outline for my thesis chapter on {t}. Give me numbered sections and sub-sections with two or three bullet points each.",
            "Help me write a policy brief on {t} for local government officials who are not specialists.",
            "Write an essay of about 2,000 words discussing {t}, with a clear argument and counter-arguments.",
        ],
        "b": [
            "Could you prepare a structured outline for a review article on {t}? Start with the research question, then the main themes, then open problems.",
            "Draft a grant proposal section describing a two-year project on {t}: background, objectives, work packages, timeline and expected impact.",
            "Write a feature article for a general audience about {t}, with a catchy title, subheadings and a short summary box at the end.",
            "Summarise the current state of knowledge on {t} as a briefing note, then list five questions a journalist might ask an expert.",
            "Produce the table of contents and a one-paragraph description of each chapter for a short book on {t}.",
        ],
    },
    "zh": {
        "a": [
            "请帮我写一篇关于{t}的论文，要求包括摘要、引言、文献综述、研究方法、结果分析和结论。",
            "请写一份关于{t}的调研报告，供公司内部季度会议使用。",
            "我需要一份关于{t}的毕业论文提纲，请列出各章节和小节，每节写两到三个要点。",
            "请以{t}为题，写一篇面向政府决策者的政策建议书，语言要通俗易懂。",
            "写一篇约三千字的议论文，讨论{t}，观点要明确，并回应可能的反对意见。",
        ],
        "b": [
            "能否帮我整理一份关于{t}的综述文章大纲？先提出研究问题，再列出主要议题，最后说明尚未解决的问题。",
            "请起草一份为期两年的{t}研究项目申请书，包括研究背景、目标、工作内容、时间安排和预期成果。",
            "请为普通读者写一篇关于{t}的专题文章，要有吸引人的标题、小标题，并在结尾附上简短的要点总结。",
            "请以简报的形式总结{t}的研究现状，然后列出记者可能向专家提出的五个问题。",
            "请为一本关于{t}的小册子设计目录，并为每一章写一段简介。",
        ],
    },
    "ja": {
        "a": [
            "{t}についての論文を書いてください。要旨、序論、先行研究、研究方法、結果、考察、結論を含めてください。",
            "{t}に関する報告書を作成してください。社内の四半期会議で使います。",
            "{t}をテーマにした卒業論文の構成案が必要です。章と節を番号付きで示し、各節に要点を二、三個書いてください。",
            "{t}について、専門家ではない自治体職員向けの政策提言書を書いてください。",
            "{t}について、約四千字の小論文を書いてください。主張を明確にし、反論にも触れてください。",
        ],
        "b": [
            "{t}に関するレビュー論文の構成を考えてください。研究課題、主なテーマ、今後の課題の順にお願いします。",
            "{t}についての二年間の研究計画書を作成してください。背景、目的、実施内容、スケジュール、期待される成果を含めてください。",
            "一般読者向けに{t}についての特集記事を書いてください。見出しと小見出しをつけ、最後に短いまとめを入れてください。",
            "{t}の現状を説明資料としてまとめ、記者が専門家に尋ねそうな質問を五つ挙げてください。",
            "{t}についての小冊子の目次を作り、各章の内容を一段落で説明してください。",
        ],
    },
    "ko": {
        "a": [
            "{t}에 관한 논문을 써 주세요. 초록, 서론, 선행 연구, 연구 방법, 결과, 논의, 결론을 포함해야 합니다.",
            "{t}에 대한 보고서를 작성해 주세요. 회사 분기 회의에서 사용할 예정입니다.",
            "{t}을(를) 주제로 한 졸업 논문 개요가 필요합니다. 장과 절에 번호를 붙이고 각 절마다 요점을 두세 개 적어 주세요.",
            "{t}에 대해 비전문가인 지방 공무원을 위한 정책 제안서를 작성해 주세요.",
            "{t}에 대해 약 삼천 자 분량의 논설문을 써 주세요. 주장을 분명히 하고 반론도 다뤄 주세요.",
        ],
        "b": [
            "{t}에 관한 리뷰 논문의 구성을 잡아 주세요. 연구 질문, 주요 주제, 남은 과제 순서로 부탁합니다.",
            "{t}에 대한 2년짜리 연구 계획서를 작성해 주세요. 배경, 목표, 세부 과제, 일정, 기대 효과를 넣어 주세요.",
            "일반 독자를 위해 {t}에 관한 기획 기사를 써 주세요. 제목과 소제목을 달고 마지막에 짧은 요약을 넣어 주세요.",
            "{t}의 현황을 브리핑 자료로 정리하고, 기자가 전문가에게 물어볼 만한 질문 다섯 가지를 적어 주세요.",
            "{t}에 관한 소책자의 목차를 만들고 각 장의 내용을 한 문단으로 설명해 주세요.",
        ],
    },
    "ru": {
        "a": [
            "Напишите научную статью на тему «{t}». Она должна содержать аннотацию, введение, обзор литературы, методы, результаты, обсуждение и заключение.",
            "Подготовьте, пожалуйста, подробный отчёт на тему «{t}» для квартального совещания нашего отдела.",
            "Мне нужен план главы диссертации на тему «{t}». Дайте пронумерованные разделы и подразделы с двумя-тремя пунктами в каждом.",
            "Помогите написать аналитическую записку на тему «{t}» для сотрудников местной администрации, которые не являются специалистами.",
            "Напишите эссе объёмом около двух тысяч слов на тему «{t}» с ясной позицией и контраргументами.",
        ],
        "b": [
            "Составьте структуру обзорной статьи на тему «{t}»: сначала исследовательский вопрос, затем основные темы, затем нерешённые проблемы.",
            "Подготовьте раздел заявки на грант с описанием двухлетнего проекта на тему «{t}»: предпосылки, цели, этапы работ, сроки и ожидаемые результаты.",
            "Напишите статью для широкой аудитории на тему «{t}» с ярким заголовком, подзаголовками и кратким резюме в конце.",
            "Кратко изложите современное состояние знаний по теме «{t}» в виде справки, затем перечислите пять вопросов, которые журналист мог бы задать эксперту.",
            "Составьте оглавление небольшой книги на тему «{t}» и опишите каждую главу одним абзацем.",
        ],
    },
    "es": {
        "a": [
            "Escribe un artículo académico sobre {t}. Debe incluir un resumen, una introducción, una revisión de la literatura, la metodología, los resultados, la discusión y las conclusiones.",
            "Por favor, redacta un informe detallado sobre {t} para la reunión trimestral de nuestro departamento.",
            "Necesito un esquema para el capítulo de mi tesis sobre {t}. Dame secciones y subsecciones numeradas con dos o tres puntos cada una.",
            "Ayúdame a escribir un documento de recomendaciones sobre {t} para funcionarios municipales que no son especialistas.",
            "Escribe un ensayo de unas dos mil palabras sobre {t}, con una tesis clara y contraargumentos.",
        ],
        "b": [
            "¿Podrías preparar un esquema para un artículo de revisión sobre {t}? Empieza por la pregunta de investigación, luego los temas principales y por último los problemas abiertos.",
            "Redacta la sección de una propuesta de financiación que describa un proyecto de dos años sobre {t}: antecedentes, objetivos, paquetes de trabajo, calendario e impacto esperado.",
            "Escribe un reportaje para el público general sobre {t}, con un título atractivo, subtítulos y un breve recuadro de resumen al final.",
            "Resume el estado actual del conocimiento sobre {t} en una nota informativa y luego enumera cinco preguntas que un periodista podría hacer a un experto.",
            "Elabora el índice de un libro breve sobre {t} y describe cada capítulo en un párrafo.",
        ],
    },
    "ar": {
        "a": [
            "اكتب ورقة بحثية عن {t}، على أن تتضمن ملخصاً ومقدمة ومراجعة للأدبيات ومنهجية ونتائج ومناقشة وخاتمة.",
            "أرجو إعداد تقرير مفصل عن {t} لاجتماع القسم الفصلي.",
            "أحتاج إلى مخطط لفصل من رسالتي عن {t}. اذكر الأقسام والأقسام الفرعية مرقمة مع نقطتين أو ثلاث لكل قسم.",
            "ساعدني في كتابة مذكرة سياسات عن {t} موجهة إلى موظفي البلدية من غير المتخصصين.",
            "اكتب مقالاً من نحو ألفي كلمة يناقش {t}، بحجة واضحة مع عرض الحجج المضادة.",
        ],
        "b": [
            "هل يمكنك إعداد مخطط لمقال مراجعة عن {t}؟ ابدأ بسؤال البحث، ثم المحاور الرئيسية، ثم المسائل التي لم تُحل بعد.",
            "اكتب قسماً من مقترح تمويل يصف مشروعاً مدته سنتان عن {t}: الخلفية والأهداف وحزم العمل والجدول الزمني والأثر المتوقع.",
            "اكتب مقالاً صحفياً لعامة القراء عن {t}، بعنوان جذاب وعناوين فرعية وملخص قصير في النهاية.",
            "لخّص الوضع الحالي للمعرفة حول {t} في مذكرة إحاطة، ثم اذكر خمسة أسئلة قد يطرحها صحفي على خبير.",
            "ضع فهرساً لكتاب قصير عن {t} وصف كل فصل في فقرة واحدة.",
        ],
    },
    "hi": {
        "a": [
            "{t} पर एक शोध पत्र लिखिए। इसमें सार, परिचय, साहित्य समीक्षा, शोध पद्धति, परिणाम, चर्चा और निष्कर्ष होने चाहिए।",
            "कृपया हमारे विभाग की तिमाही बैठक के लिए {t} पर एक विस्तृत रिपोर्ट तैयार कीजिए।",
            "मुझे {t} विषय पर अपने शोध प्रबंध के अध्याय की रूपरेखा चाहिए। क्रमांकित खंड और उपखंड दीजिए, हर एक में दो-तीन बिंदु।",
            "{t} पर स्थानीय सरकारी अधिकारियों के लिए एक नीति पत्र लिखने में मेरी मदद कीजिए, जो विशेषज्ञ नहीं हैं।",
            "{t} पर लगभग दो हज़ार शब्दों का एक निबंध लिखिए, जिसमें स्पष्ट तर्क और विरोधी तर्क हों।",
        ],
        "b": [
            "क्या आप {t} पर एक समीक्षा लेख की रूपरेखा तैयार कर सकते हैं? पहले शोध प्रश्न, फिर मुख्य विषय, फिर अनसुलझी समस्याएँ।",
            "{t} पर दो साल की परियोजना का वर्णन करने वाला अनुदान प्रस्ताव का एक खंड लिखिए: पृष्ठभूमि, उद्देश्य, कार्य योजना, समय-सारिणी और अपेक्षित प्रभाव।",
            "आम पाठकों के लिए {t} पर एक फ़ीचर लेख लिखिए, जिसमें आकर्षक शीर्षक, उपशीर्षक और अंत में छोटा सारांश हो।",
            "{t} पर वर्तमान जानकारी को एक ब्रीफ़िंग नोट के रूप में संक्षेप में लिखिए, फिर पाँच प्रश्न बताइए जो कोई पत्रकार किसी विशेषज्ञ से पूछ सकता है।",
            "{t} पर एक छोटी पुस्तक की विषय-सूची बनाइए और हर अध्याय का एक अनुच्छेद में वर्णन कीजिए।",
        ],
    },
}

# Requirements added after the frame (two to six of them). Batch a and b use different halves.
REQUIREMENTS: dict[str, dict[str, list[str]]] = {
    "en": {
        "a": [
            "Use a formal academic tone.",
            "Cite at least ten sources from the last five years in APA style.",
            "Each section should be at least 300 words.",
            "Include a table comparing three countries.",
            "Avoid jargon where possible and define technical terms on first use.",
            "End with recommendations for further research.",
        ],
        "b": [
            "Keep the language plain: the readers are not experts.",
            "Add a short executive summary at the top.",
            "Use headings in Markdown.",
            "Mention the main limitations of the evidence.",
            "Suggest two figures or charts that would help, and describe what they show.",
            "The whole text should fit on about four pages.",
        ],
    },
    "zh": {
        "a": [
            "语言要正式、符合学术规范。",
            "请引用近五年的至少十篇文献，格式采用GB/T 7714。",
            "每个部分不少于五百字。",
            "请加入一张比较三个国家情况的表格。",
            "尽量少用术语，第一次出现的专业名词要加以解释。",
            "最后提出进一步研究的建议。",
        ],
        "b": [
            "语言要通俗，读者不是专业人士。",
            "开头请加一段简短的摘要。",
            "请使用Markdown格式的标题。",
            "请说明现有证据的主要局限。",
            "建议两张有帮助的图表，并说明它们展示什么内容。",
            "全文篇幅大约四页。",
        ],
    },
    "ja": {
        "a": [
            "文体は学術的な「である調」でお願いします。",
            "過去五年以内の文献を十件以上引用してください。",
            "各節は八百字以上にしてください。",
            "三か国を比較する表を入れてください。",
            "専門用語はできるだけ避け、初出時に説明してください。",
            "最後に今後の研究課題を挙げてください。",
        ],
        "b": [
            "読者は専門家ではないので、やさしい言葉で書いてください。",
            "冒頭に短い要約をつけてください。",
            "見出しはMarkdown形式にしてください。",
            "根拠の主な限界にも触れてください。",
            "役に立つ図表を二つ提案し、何を示すか説明してください。",
            "全体でA4四枚程度に収めてください。",
        ],
    },
    "ko": {
        "a": [
            "학술적인 문체로 써 주세요.",
            "최근 5년 이내의 문헌을 열 편 이상 인용해 주세요.",
            "각 절은 최소 오백 자 이상이어야 합니다.",
            "세 나라를 비교하는 표를 넣어 주세요.",
            "전문 용어는 가능한 한 피하고, 처음 나올 때 설명해 주세요.",
            "마지막에 후속 연구를 위한 제언을 넣어 주세요.",
        ],
        "b": [
            "독자가 전문가가 아니므로 쉬운 말로 써 주세요.",
            "맨 앞에 짧은 요약을 넣어 주세요.",
            "제목은 마크다운 형식으로 해 주세요.",
            "근거의 주요 한계도 언급해 주세요.",
            "도움이 될 만한 그림이나 표 두 개를 제안하고 무엇을 보여 주는지 설명해 주세요.",
            "전체 분량은 A4 네 장 정도로 해 주세요.",
        ],
    },
    "ru": {
        "a": [
            "Используйте формальный академический стиль.",
            "Приведите не менее десяти источников за последние пять лет по ГОСТ.",
            "Каждый раздел должен содержать не менее трёхсот слов.",
            "Добавьте таблицу со сравнением трёх стран.",
            "По возможности избегайте жаргона и поясняйте термины при первом упоминании.",
            "В конце дайте рекомендации для дальнейших исследований.",
        ],
        "b": [
            "Пишите простым языком: читатели не специалисты.",
            "В начале добавьте краткое резюме.",
            "Используйте заголовки в формате Markdown.",
            "Укажите основные ограничения имеющихся данных.",
            "Предложите два графика или диаграммы и опишите, что они показывают.",
            "Объём текста — около четырёх страниц.",
        ],
    },
    "es": {
        "a": [
            "Usa un tono académico formal.",
            "Cita al menos diez fuentes de los últimos cinco años en formato APA.",
            "Cada sección debe tener al menos trescientas palabras.",
            "Incluye una tabla que compare tres países.",
            "Evita la jerga en lo posible y define los términos técnicos la primera vez que aparezcan.",
            "Termina con recomendaciones para investigaciones futuras.",
        ],
        "b": [
            "Usa un lenguaje sencillo: los lectores no son expertos.",
            "Añade un breve resumen ejecutivo al principio.",
            "Usa encabezados en Markdown.",
            "Menciona las principales limitaciones de la evidencia.",
            "Sugiere dos gráficos que ayudarían y describe lo que muestran.",
            "El texto completo debería ocupar unas cuatro páginas.",
        ],
    },
    "ar": {
        "a": [
            "استخدم أسلوباً أكاديمياً رسمياً.",
            "استشهد بعشرة مصادر على الأقل من السنوات الخمس الأخيرة.",
            "يجب ألا يقل كل قسم عن ثلاثمئة كلمة.",
            "أضف جدولاً يقارن بين ثلاث دول.",
            "تجنب المصطلحات المتخصصة قدر الإمكان وعرّف المصطلحات التقنية عند أول ذكر لها.",
            "اختم بتوصيات لأبحاث مستقبلية.",
        ],
        "b": [
            "استخدم لغة بسيطة، فالقراء ليسوا متخصصين.",
            "أضف ملخصاً تنفيذياً قصيراً في البداية.",
            "استخدم عناوين بصيغة ماركداون.",
            "اذكر أهم حدود الأدلة المتاحة.",
            "اقترح رسمين بيانيين مفيدين وصف ما يوضحانه.",
            "يجب أن يكون النص كله في حدود أربع صفحات.",
        ],
    },
    "hi": {
        "a": [
            "औपचारिक अकादमिक भाषा का प्रयोग कीजिए।",
            "पिछले पाँच वर्षों के कम से कम दस स्रोतों का हवाला दीजिए।",
            "हर खंड कम से कम तीन सौ शब्दों का होना चाहिए।",
            "तीन देशों की तुलना करने वाली एक तालिका जोड़िए।",
            "जहाँ तक हो सके कठिन शब्दावली से बचिए और तकनीकी शब्दों को पहली बार आने पर समझाइए।",
            "अंत में आगे के शोध के लिए सुझाव दीजिए।",
        ],
        "b": [
            "सरल भाषा का प्रयोग कीजिए, पाठक विशेषज्ञ नहीं हैं।",
            "शुरुआत में एक छोटा सारांश जोड़िए।",
            "शीर्षक मार्कडाउन में लिखिए।",
            "उपलब्ध प्रमाणों की मुख्य सीमाओं का उल्लेख कीजिए।",
            "दो उपयोगी चार्ट सुझाइए और बताइए कि वे क्या दिखाते हैं।",
            "पूरा पाठ लगभग चार पन्नों का होना चाहिए।",
        ],
    },
}

# A sketched structure the user pastes under the request (numbered sections), per language.
SECTION_WORDS: dict[str, list[str]] = {
    "en": ["Introduction", "Background", "Methods", "Findings", "Discussion", "Recommendations", "Conclusion"],
    "zh": ["引言", "研究背景", "研究方法", "主要发现", "讨论", "对策建议", "结论"],
    "ja": ["はじめに", "背景", "方法", "結果", "考察", "提言", "おわりに"],
    "ko": ["서론", "배경", "방법", "결과", "논의", "제언", "결론"],
    "ru": ["Введение", "Предпосылки", "Методы", "Результаты", "Обсуждение", "Рекомендации", "Заключение"],
    "es": ["Introducción", "Antecedentes", "Métodos", "Resultados", "Discusión", "Recomendaciones", "Conclusión"],
    "ar": ["المقدمة", "الخلفية", "المنهجية", "النتائج", "المناقشة", "التوصيات", "الخاتمة"],
    "hi": ["परिचय", "पृष्ठभूमि", "पद्धति", "निष्कर्ष", "चर्चा", "सुझाव", "उपसंहार"],
}
STRUCTURE_LEAD = {
    "en": "Use this structure:",
    "zh": "请按照以下结构：",
    "ja": "次の構成でお願いします：",
    "ko": "다음 구성을 따라 주세요:",
    "ru": "Используйте такую структуру:",
    "es": "Usa esta estructura:",
    "ar": "استخدم هذا الهيكل:",
    "hi": "यह संरचना अपनाइए:",
}
NOTES_LEAD = {
    "en": "Here are my notes and the material to draw on:",
    "zh": "以下是我的笔记和参考资料：",
    "ja": "以下は私のメモと参考資料です：",
    "ko": "다음은 제 메모와 참고 자료입니다:",
    "ru": "Вот мои заметки и материалы, на которые можно опираться:",
    "es": "Aquí están mis notas y el material de referencia:",
    "ar": "هذه ملاحظاتي والمواد التي يمكن الاستناد إليها:",
    "hi": "ये मेरे नोट्स और संदर्भ सामग्री हैं:",
}
LANGUAGES = tuple(TOPICS)


def writing_tasks(lang: str, batch: str, n: int, seed: int = 7) -> list[str]:
    """``n`` distinct requests in ``lang`` from frames/requirements of ``batch`` (a or b)."""
    rng = random.Random(f"{lang}:{batch}:{seed}")
    frames, reqs, topics = FRAMES[lang][batch], REQUIREMENTS[lang][batch], TOPICS[lang]
    sep = "" if lang in ("zh", "ja") else " "
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        frame, topic = rng.choice(frames), rng.choice(topics)
        parts = [frame.format(t=topic)]
        parts += rng.sample(reqs, rng.randint(2, min(6, len(reqs))))
        text = sep.join(parts)
        if rng.random() < 0.5:
            sections = SECTION_WORDS[lang][: rng.randint(4, 7)]
            text += "\n\n" + STRUCTURE_LEAD[lang] + "\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(sections, 1))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
