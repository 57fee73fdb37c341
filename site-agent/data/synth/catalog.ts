// The synthetic hospital's disease catalogue: each diagnosis comes with the symptom, history,
// exam and lab patterns that point to it, so a model trained on the cases can learn the mapping
// (chest pain + troponin↑ → acute MI; polyuria + HbA1c↑ → type 2 diabetes; ...).

export type Lang = 'zh' | 'en';
export interface Bi { zh: string; en: string }

export interface LabSpec {
  name: Bi;
  loinc: string;
  unit: string;
  /** Value range of the abnormal finding (and its flag). */
  abnormal: [number, number];
  flag: 'H' | 'L';
  normal: [number, number];
  decimals: number;
}

export interface Diagnosis {
  key: string;
  dept: number;
  name: Bi;
  icd10: string;
  snomed: string;
  symptoms: Bi[]; // 2-3 are picked
  history: Bi[];
  exam: Bi[];
  labs: string[]; // keys into LABS (abnormal); [] when the decisive finding is ECG/imaging/history
  treatment: Bi;
  rxnorm: string;
}

export const DEPARTMENTS: Bi[] = [
  { zh: '心内科', en: 'Cardiology' },
  { zh: '内分泌科', en: 'Endocrinology' },
  { zh: '呼吸内科', en: 'Respiratory Medicine' },
  { zh: '神经内科', en: 'Neurology' },
  { zh: '消化内科', en: 'Gastroenterology' },
];

const L = (zh: string, en: string, loinc: string, unit: string, abnormal: [number, number], flag: 'H' | 'L', normal: [number, number], decimals = 1): LabSpec => ({
  name: { zh, en }, loinc, unit, abnormal, flag, normal, decimals,
});

export const LABS: Record<string, LabSpec> = {
  troponin: L('肌钙蛋白I', 'Troponin I', '10839-9', 'ng/mL', [0.8, 25], 'H', [0, 0.03], 2),
  ckmb: L('肌酸激酶同工酶', 'CK-MB', '13969-1', 'U/L', [40, 180], 'H', [5, 24], 0),
  bnp: L('脑钠肽', 'BNP', '30934-4', 'pg/mL', [600, 3500], 'H', [10, 90], 0),
  hba1c: L('糖化血红蛋白', 'HbA1c', '4548-4', '%', [7.2, 11.5], 'H', [4.5, 5.8], 1),
  glucose: L('空腹血糖', 'Fasting glucose', '1558-6', 'mmol/L', [8.5, 16], 'H', [4.0, 5.9], 1),
  ft4: L('游离甲状腺素', 'Free T4', '3024-7', 'pmol/L', [35, 80], 'H', [12, 22], 1),
  tsh: L('促甲状腺激素', 'TSH', '3016-3', 'mIU/L', [0.005, 0.08], 'L', [0.5, 4.5], 3),
  wbc: L('白细胞', 'WBC', '6690-2', '10^9/L', [12, 22], 'H', [4, 9.5], 1),
  crp: L('C反应蛋白', 'CRP', '1988-5', 'mg/L', [40, 220], 'H', [0, 8], 0),
  pco2: L('二氧化碳分压', 'PaCO2', '2019-8', 'mmHg', [52, 75], 'H', [35, 45], 0),
  eos: L('嗜酸性粒细胞', 'Eosinophils', '711-2', '10^9/L', [0.6, 1.5], 'H', [0.02, 0.5], 2),
  lipase: L('脂肪酶', 'Lipase', '3040-3', 'U/L', [400, 3000], 'H', [13, 60], 0),
  amylase: L('血淀粉酶', 'Amylase', '1798-8', 'U/L', [350, 1800], 'H', [30, 110], 0),
  hb: L('血红蛋白', 'Hemoglobin', '718-7', 'g/L', [62, 95], 'L', [120, 160], 0),
  sodium: L('血钠', 'Sodium', '2951-2', 'mmol/L', [136, 145], 'H', [136, 145], 0),
};

const B = (zh: string, en: string): Bi => ({ zh, en });

export const DIAGNOSES: Diagnosis[] = [
  {
    key: 'ami', dept: 0, name: B('急性心肌梗死', 'Acute myocardial infarction'), icd10: 'I21.9', snomed: '57054005',
    symptoms: [B('胸痛', 'chest pain'), B('胸骨后压榨性疼痛', 'crushing substernal chest pressure'), B('大汗', 'diaphoresis'), B('左肩放射痛', 'pain radiating to the left arm')],
    history: [B('高血压病史10年', '10-year history of hypertension'), B('吸烟30年', '30 pack-year smoker'), B('高脂血症', 'hyperlipidemia')],
    exam: [B('心电图示ST段抬高', 'ECG shows ST elevation in leads II, III, aVF'), B('面色苍白，大汗淋漓', 'pale and diaphoretic')],
    labs: ['troponin', 'ckmb'], treatment: B('阿司匹林300mg嚼服，急诊PCI', 'aspirin 300 mg chewed, emergent PCI'), rxnorm: '1191',
  },
  {
    key: 'hf', dept: 0, name: B('慢性心力衰竭急性加重', 'Acute decompensated heart failure'), icd10: 'I50.9', snomed: '84114007',
    symptoms: [B('活动后气促', 'dyspnea on exertion'), B('夜间阵发性呼吸困难', 'paroxysmal nocturnal dyspnea'), B('双下肢水肿', 'bilateral leg swelling')],
    history: [B('陈旧性心肌梗死', 'prior myocardial infarction'), B('扩张型心肌病', 'dilated cardiomyopathy')],
    exam: [B('双肺底湿啰音，颈静脉怒张', 'bibasilar crackles, raised JVP'), B('双下肢凹陷性水肿', 'pitting edema of both legs')],
    labs: ['bnp'], treatment: B('呋塞米20mg静脉注射，限盐限水', 'furosemide 40 mg IV, fluid and salt restriction'), rxnorm: '4603',
  },
  {
    key: 'af', dept: 0, name: B('心房颤动', 'Atrial fibrillation'), icd10: 'I48.91', snomed: '49436004',
    symptoms: [B('心悸', 'palpitations'), B('心跳不规则', 'irregular heartbeat'), B('头晕', 'lightheadedness')],
    history: [B('甲状腺功能正常', 'euthyroid'), B('饮酒史', 'regular alcohol use')],
    exam: [B('心律绝对不齐，脉搏短绌', 'irregularly irregular pulse, pulse deficit'), B('心电图示P波消失，f波', 'ECG shows absent P waves with fibrillatory waves')],
    labs: [], treatment: B('美托洛尔控制心室率，利伐沙班抗凝', 'metoprolol for rate control, rivaroxaban anticoagulation'), rxnorm: '6918',
  },
  {
    key: 't2dm', dept: 1, name: B('2型糖尿病', 'Type 2 diabetes mellitus'), icd10: 'E11.9', snomed: '44054006',
    symptoms: [B('多尿', 'polyuria'), B('多饮', 'polydipsia'), B('体重下降', 'weight loss'), B('乏力', 'fatigue')],
    history: [B('肥胖', 'obesity'), B('糖尿病家族史', 'family history of diabetes')],
    exam: [B('BMI 31', 'BMI 31'), B('足背动脉搏动减弱', 'diminished dorsalis pedis pulses')],
    labs: ['hba1c', 'glucose'], treatment: B('二甲双胍500mg 每日两次，饮食运动指导', 'metformin 500 mg twice daily, diet and exercise counselling'), rxnorm: '6809',
  },
  {
    key: 'hyperthyroid', dept: 1, name: B('甲状腺功能亢进症', 'Hyperthyroidism'), icd10: 'E05.90', snomed: '34486009',
    symptoms: [B('怕热多汗', 'heat intolerance and sweating'), B('手抖', 'tremor'), B('心悸', 'palpitations'), B('消瘦', 'weight loss despite good appetite')],
    history: [B('近期情绪急躁', 'recent irritability'), B('甲状腺肿大', 'enlarging neck swelling')],
    exam: [B('甲状腺II度肿大，可闻及血管杂音', 'diffuse goiter with bruit'), B('双手细颤', 'fine tremor of outstretched hands')],
    labs: ['ft4', 'tsh'], treatment: B('甲巯咪唑10mg 每日三次', 'methimazole 10 mg three times daily'), rxnorm: '6835',
  },
  {
    key: 'pneumonia', dept: 2, name: B('社区获得性肺炎', 'Community-acquired pneumonia'), icd10: 'J18.9', snomed: '385093006',
    symptoms: [B('咳嗽', 'cough'), B('发热', 'fever'), B('咳黄痰', 'purulent sputum'), B('胸膜性胸痛', 'pleuritic chest pain')],
    history: [B('受凉后起病', 'onset after a cold exposure'), B('既往体健', 'previously healthy')],
    exam: [B('体温39.2℃，右下肺湿啰音', 'temperature 39.2 C, crackles over the right lower lobe'), B('胸片示右下肺浸润影', 'chest X-ray shows right lower lobe infiltrate')],
    labs: ['wbc', 'crp'], treatment: B('头孢曲松2g静脉滴注 每日一次', 'ceftriaxone 2 g IV every day plus azithromycin'), rxnorm: '2193',
  },
  {
    key: 'copd', dept: 2, name: B('慢性阻塞性肺疾病急性加重', 'Acute exacerbation of COPD'), icd10: 'J44.1', snomed: '195951007',
    symptoms: [B('气促加重', 'worsening shortness of breath'), B('咳嗽咳痰增多', 'increased cough and sputum'), B('喘息', 'wheezing')],
    history: [B('吸烟40年', '40 pack-year smoking history'), B('慢性咳嗽10年', 'chronic cough for 10 years')],
    exam: [B('桶状胸，双肺呼吸音低', 'barrel chest, diminished breath sounds'), B('口唇发绀', 'perioral cyanosis')],
    labs: ['pco2'], treatment: B('沙丁胺醇雾化，泼尼松40mg 口服', 'nebulised salbutamol, prednisone 40 mg by mouth'), rxnorm: '8640',
  },
  {
    key: 'asthma', dept: 2, name: B('支气管哮喘急性发作', 'Acute asthma exacerbation'), icd10: 'J45.901', snomed: '708038006',
    symptoms: [B('发作性喘息', 'episodic wheezing'), B('胸闷', 'chest tightness'), B('夜间咳嗽', 'nocturnal cough')],
    history: [B('过敏性鼻炎', 'allergic rhinitis'), B('接触花粉后发作', 'symptoms after pollen exposure')],
    exam: [B('双肺呼气相哮鸣音', 'diffuse expiratory wheeze'), B('呼气相延长', 'prolonged expiration')],
    labs: ['eos'], treatment: B('吸入布地奈德福莫特罗', 'inhaled budesonide-formoterol, as needed salbutamol'), rxnorm: '1649574',
  },
  {
    key: 'stroke', dept: 3, name: B('急性缺血性脑卒中', 'Acute ischemic stroke'), icd10: 'I63.9', snomed: '422504002',
    symptoms: [B('突发右侧肢体无力', 'sudden right-sided weakness'), B('言语不清', 'slurred speech'), B('口角歪斜', 'facial droop')],
    history: [B('心房颤动未抗凝', 'atrial fibrillation without anticoagulation'), B('高血压', 'hypertension')],
    exam: [B('右侧肢体肌力3级，巴氏征阳性', 'right arm and leg power 3/5, positive Babinski'), B('头颅CT未见出血', 'head CT without hemorrhage')],
    labs: [], treatment: B('阿替普酶静脉溶栓', 'IV alteplase thrombolysis'), rxnorm: '8410',
  },
  {
    key: 'migraine', dept: 3, name: B('偏头痛', 'Migraine'), icd10: 'G43.909', snomed: '37796009',
    symptoms: [B('单侧搏动性头痛', 'unilateral throbbing headache'), B('畏光', 'photophobia'), B('恶心呕吐', 'nausea and vomiting')],
    history: [B('反复发作5年', 'recurrent attacks for 5 years'), B('发作前视觉先兆', 'visual aura before attacks')],
    exam: [B('神经系统查体无阳性体征', 'normal neurological examination'), B('颈软', 'supple neck')],
    labs: [], treatment: B('布洛芬400mg 必要时，舒马普坦', 'ibuprofen 400 mg as needed, sumatriptan'), rxnorm: '5640',
  },
  {
    key: 'pancreatitis', dept: 4, name: B('急性胰腺炎', 'Acute pancreatitis'), icd10: 'K85.90', snomed: '197456007',
    symptoms: [B('上腹痛向背部放射', 'epigastric pain radiating to the back'), B('恶心呕吐', 'nausea and vomiting'), B('腹胀', 'abdominal distension')],
    history: [B('暴饮暴食后起病', 'onset after a heavy meal'), B('胆囊结石', 'gallstones'), B('大量饮酒', 'heavy alcohol use')],
    exam: [B('上腹部压痛', 'epigastric tenderness'), B('CT示胰腺肿大渗出', 'CT shows pancreatic swelling with peripancreatic fluid')],
    labs: ['lipase', 'amylase'], treatment: B('禁食，静脉补液，镇痛', 'nil by mouth, IV fluids, analgesia'), rxnorm: '7052',
  },
  {
    key: 'ugib', dept: 4, name: B('消化性溃疡伴出血', 'Peptic ulcer with hemorrhage'), icd10: 'K27.4', snomed: '15902003',
    symptoms: [B('黑便', 'black tarry stools'), B('呕血', 'hematemesis'), B('头晕乏力', 'dizziness and weakness')],
    history: [B('长期服用布洛芬', 'long-term NSAID use'), B('幽门螺杆菌阳性', 'Helicobacter pylori positive')],
    exam: [B('心率112次/分，贫血貌', 'heart rate 112, pale conjunctivae'), B('胃镜示十二指肠球部溃疡', 'endoscopy shows a duodenal ulcer')],
    labs: ['hb'], treatment: B('奥美拉唑静脉滴注，内镜下止血', 'IV omeprazole, endoscopic hemostasis'), rxnorm: '7646',
  },
  {
    key: 'gerd', dept: 4, name: B('胃食管反流病', 'Gastroesophageal reflux disease'), icd10: 'K21.9', snomed: '235595009',
    symptoms: [B('烧心', 'heartburn'), B('反酸', 'acid regurgitation'), B('餐后胸骨后烧灼感', 'burning retrosternal pain after meals')],
    history: [B('症状平卧加重', 'worse when lying down'), B('肥胖', 'obesity')],
    exam: [B('腹软无压痛', 'soft non-tender abdomen'), B('胃镜示反流性食管炎', 'endoscopy shows reflux esophagitis')],
    labs: [], treatment: B('奥美拉唑20mg 每日一次', 'omeprazole 20 mg every day'), rxnorm: '7646',
  },
];

// Labs every case gets with normal values (noise the model must learn to ignore).
export const ROUTINE_LABS = ['wbc', 'hb', 'sodium', 'glucose'];

export const SURNAMES_ZH = ['王', '李', '张', '刘', '陈', '杨', '黄', '赵', '周', '吴', '徐', '孙', '马', '朱', '胡'];
export const GIVEN_ZH = ['伟', '芳', '娜', '秀英', '敏', '静', '丽', '强', '磊', '军', '洋', '勇', '艳', '杰', '娟', '涛', '明', '超'];
export const FIRST_EN = ['James', 'Mary', 'John', 'Patricia', 'Robert', 'Jennifer', 'Michael', 'Linda', 'William', 'Elizabeth', 'David', 'Susan', 'Thomas', 'Karen'];
export const LAST_EN = ['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Wilson', 'Anderson', 'Taylor', 'Moore'];
export const CITIES_ZH = [
  ['北京市', '朝阳区', '建国路'], ['上海市', '浦东新区', '世纪大道'], ['广州市', '天河区', '天河路'], ['成都市', '武侯区', '人民南路'], ['杭州市', '西湖区', '文三路'],
];
export const STREETS_EN = ['Oak Street', 'Maple Avenue', 'Cedar Lane', 'Elm Road', 'Pine Drive', 'Washington Blvd'];
export const CITIES_EN = [['Springfield', 'IL', '62704'], ['Madison', 'WI', '53703'], ['Salem', 'OR', '97301'], ['Dover', 'DE', '19901']];
