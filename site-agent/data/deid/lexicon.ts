// Word lists for name detection and pseudonyms. Kept here (data, no logic) so that the
// detectors stay readable. Lists are deliberately conservative: a surname that is also a
// common clinical character (高 in 高血压, 黄 in 黄疸, 白 in 白细胞) is only trusted next to a
// strong context (患者, 医生, 某, 姓名:) and never as a bare name.

/** Two-character (compound) Chinese surnames. */
export const COMPOUND_SURNAMES = [
  '欧阳', '司马', '诸葛', '上官', '东方', '皇甫', '尉迟', '公孙', '慕容', '长孙', '宇文', '司徒', '夏侯',
  '轩辕', '令狐', '端木', '独孤', '南宫', '西门', '百里', '呼延', '万俟', '澹台', '公冶', '濮阳', '淳于',
  '单于', '太叔', '申屠', '钟离', '闻人', '赫连', '拓跋', '第五', '东郭', '左丘', '司空', '亓官',
];

/** Common single-character surnames that are rarely the first character of a clinical word:
 *  trusted for bare names ("张三，男，45岁") too. */
export const SAFE_SURNAMES = [
  ...'王李张刘陈杨赵吴周徐孙马朱胡郭何林罗郑梁谢宋唐许韩冯邓曹彭曾萧蔡潘袁蒋杜魏叶程苏吕卢丁任姚姜崔钟谭陆汪范廖邹熊孟秦邱侯江薛阎段雷龙黎郝邵贾孔毛邢俞闫庞樊殷钱汤尹易武乔赖顾龚邬倪严施牛洪葛莫仇晏柯褚喻岳邝'.split(''),
];

/** Surnames that collide with clinical words (高血压, 黄疸, 白细胞, 病史, 结石, 体温, 康复 ...):
 *  only recognised with a strong context. */
export const AMBIGUOUS_SURNAMES = [
  ...'高黄白史石金温康安常和明平时文方向甘包万于余齐谷曲申尚田左付董沈韦傅夏卫陶戴贺覃骆聂章鲁伍凌单'.split(''),
];

/** Characters that end a Chinese name rather than continue it: function words, clinical
 *  verbs and nouns that typically follow a name in a note ("张三因胸痛", "李四于今日"). */
export const GIVEN_STOP_CHARS = new Set(
  '因于在的了是和与及为主诉入出现自今昨前后有无等男女岁到来去被把将从向对给经行已曾既近反持伴以诊院性患之其也又而且说称述感查示见检术次左右，。；：、,.;:!?！？（）()【】[]“”"\' \t\n医护主教先老院某家之诉诊断治疗住科室床号病执予陪送拒签告接负请带均仍即则便称拟'.split(''),
);

/** Titles that follow a Chinese name (the name span excludes the title). */
export const ZH_TITLES_AFTER = [
  '主任医师', '副主任医师', '主治医师', '住院医师', '护士长', '医生', '医师', '大夫', '护士', '主任', '教授', '先生',
  '女士', '小姐', '老师', '师傅', '院长', '阿姨', '同志', '老人', '老太', '患者', '病人',
  '之母', '之父', '之子', '之女', '之妻', '之夫', '之孙',
];

/** Contexts that precede a Chinese name. */
export const ZH_CONTEXT_BEFORE = [
  '患者姓名', '病人姓名', '姓名', '患者', '病人', '患儿', '产妇', '家属', '其子', '其女', '其妻', '其夫', '其母', '其父',
  '联系人', '陪护人', '监护人', '签名', '签字', '记录者', '记录人', '报告人', '审核人', '审核者', '主治医师', '主管医师',
  '经治医师', '住院医师', '医师', '医生', '护士', '责任护士', '患者家属', '代诉人',
];

/** Clinical words that start with a surname character and must never be read as names. */
export const CLINICAL_WORDS = [
  '高血压', '高血脂', '高血糖', '高热', '高烧', '高钾', '高钠', '高尿酸', '高脂血症', '黄疸', '黄体酮', '白细胞', '白蛋白',
  '白内障', '石膏', '金刚烷胺', '温度', '康复', '安定', '安眠', '常规', '明显', '平稳', '平素', '时间', '方案', '甘露醇',
  '甘油', '包块', '万古霉素', '于今', '余无', '齐拉西酮', '谷丙', '谷草', '曲美他嗪', '申请', '田七', '左侧', '左心',
  '左室', '付费', '华法林', '罗红霉素', '雷贝拉唑', '雷米普利', '林可霉素', '葛根', '钱币', '胡言', '马来酸', '周围',
  '周身', '孙辈', '杨梅', '毛细', '毛发', '洪脉', '钟点', '程度', '苏醒', '吕氏', '卢戈', '任何', '姜黄', '龙胆',
  '黎明', '严重', '施行', '牛奶', '莫西沙星', '岳母', '易怒', '武器', '乔迁', '陆续', '江浙', '薛氏', '潘生丁', '邓氏',
  '冯氏', '丁酸', '丁香', '谢绝', '朱砂', '邱疹', '蔡氏', '王氏', '李氏', '许可', '何时', '韩国', '宋体', '梁上', '秦皮',
  '顾虑', '尹氏', '贾氏', '杜冷丁', '魏氏', '叶酸', '叶片', '唐氏', '程序', '袁氏', '孟鲁司特', '范围', '邹氏', '熊胆',
  '殷红', '汤剂', '汪氏', '段落', '江河', '钟离', '龚氏', '倪氏', '洪水', '俞氏', '岳氏', '邝氏', '曹氏', '彭氏', '曾经',
  '曾有', '曾患', '萧氏', '姚氏', '崔氏', '谭氏', '廖氏', '侯氏', '郝氏', '邵氏', '孔氏', '邢氏', '庞氏', '樊氏', '钱氏',
  '赖氏', '葛氏', '柯氏', '褚氏', '喻氏',
];

/** Common English given names: a capitalised word after one of these is read as a surname. */
export const EN_FIRST_NAMES = [
  'James', 'John', 'Robert', 'Michael', 'William', 'David', 'Richard', 'Joseph', 'Thomas', 'Charles', 'Christopher',
  'Daniel', 'Matthew', 'Anthony', 'Donald', 'Steven', 'Paul', 'Andrew', 'Joshua', 'Kenneth', 'Kevin', 'Brian',
  'George', 'Edward', 'Ronald', 'Timothy', 'Jason', 'Jeffrey', 'Ryan', 'Jacob', 'Gary', 'Nicholas', 'Eric',
  'Jonathan', 'Stephen', 'Larry', 'Justin', 'Scott', 'Brandon', 'Benjamin', 'Samuel', 'Frank', 'Gregory', 'Raymond',
  'Alexander', 'Patrick', 'Jack', 'Dennis', 'Jerry', 'Tyler', 'Aaron', 'Henry', 'Peter', 'Adam', 'Nathan', 'Zachary',
  'Walter', 'Harold', 'Kyle', 'Carl', 'Arthur', 'Gerald', 'Roger', 'Keith', 'Lawrence', 'Terry', 'Sean', 'Albert',
  'Joe', 'Mary', 'Patricia', 'Jennifer', 'Linda', 'Elizabeth', 'Barbara', 'Susan', 'Jessica', 'Sarah', 'Karen',
  'Nancy', 'Lisa', 'Betty', 'Margaret', 'Sandra', 'Ashley', 'Kimberly', 'Emily', 'Donna', 'Michelle', 'Dorothy',
  'Carol', 'Amanda', 'Melissa', 'Deborah', 'Stephanie', 'Rebecca', 'Sharon', 'Laura', 'Cynthia', 'Kathleen', 'Amy',
  'Shirley', 'Angela', 'Helen', 'Anna', 'Brenda', 'Pamela', 'Nicole', 'Emma', 'Samantha', 'Katherine', 'Christine',
  'Debra', 'Rachel', 'Catherine', 'Carolyn', 'Janet', 'Ruth', 'Maria', 'Heather', 'Diane', 'Virginia', 'Julie',
  'Joyce', 'Victoria', 'Olivia', 'Kelly', 'Christina', 'Lauren', 'Joan', 'Evelyn', 'Judith', 'Megan', 'Cheryl',
  'Andrea', 'Hannah', 'Martha', 'Jacqueline', 'Frances', 'Gloria', 'Ann', 'Teresa', 'Kathryn', 'Sara', 'Janice',
  'Jean', 'Alice', 'Madison', 'Doris', 'Abigail', 'Julia', 'Judy', 'Grace', 'Denise', 'Amber', 'Marilyn', 'Beverly',
  'Danielle', 'Theresa', 'Sophia', 'Marie', 'Diana', 'Brittany', 'Natalie', 'Isabella', 'Charlotte', 'Rose', 'Alexis',
  'Kayla', 'Jane', 'Wei', 'Li', 'Ming', 'Hui', 'Jun', 'Ying', 'Xiao', 'Jian',
];

export const EN_LAST_NAMES = [
  'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez', 'Martinez', 'Hernandez',
  'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin', 'Lee', 'Perez',
  'Thompson', 'White', 'Harris', 'Sanchez', 'Clark', 'Ramirez', 'Lewis', 'Robinson', 'Walker', 'Young', 'Allen',
  'King', 'Wright', 'Scott', 'Torres', 'Nguyen', 'Hill', 'Flores', 'Green', 'Adams', 'Nelson', 'Baker', 'Hall',
  'Rivera', 'Campbell', 'Mitchell', 'Carter', 'Roberts', 'Doe', 'Wang', 'Zhang', 'Chen', 'Liu', 'Huang', "O'Brien",
  'McDonald', 'Kowalski', 'Schneider', 'Fischer', 'Weber', 'Patel', 'Kim', 'Park', 'Nakamura', 'Rossi', 'Dubois',
];

/** Capitalised words that are never part of an English name (clinical and document words). */
export const EN_NAME_STOPWORDS = new Set([
  'Patient', 'Pt', 'The', 'A', 'An', 'And', 'Or', 'Of', 'In', 'On', 'At', 'To', 'For', 'With', 'By', 'From', 'Is', 'Was',
  'Has', 'Had', 'He', 'She', 'They', 'His', 'Her', 'Their', 'This', 'That', 'Who', 'No', 'Yes', 'Not', 'Denies', 'Reports',
  'Presented', 'Presents', 'Admitted', 'Discharged', 'Hospital', 'Clinic', 'Department', 'Emergency', 'Cardiology',
  'Medicine', 'Surgery', 'Unit', 'Ward', 'Room', 'Bed', 'History', 'Diagnosis', 'Plan', 'Assessment', 'Type', 'Diabetes',
  'Heart', 'Failure', 'Acute', 'Chronic', 'Disease', 'Syndrome', 'Mellitus', 'Hypertension', 'Pneumonia', 'Cancer',
  'Aspirin', 'Metformin', 'Insulin', 'Daily', 'Twice', 'Street', 'Avenue', 'Road', 'Name', 'MD', 'RN', 'NP', 'PA',
  'DO', 'PhD', 'MRN', 'DOB', 'ICU', 'ER', 'ED', 'BP', 'HR', 'Today', 'Yesterday', 'Tomorrow', 'January', 'February',
  'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December', 'Monday',
  'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday', 'Mr', 'Mrs', 'Ms', 'Dr', 'Prof', 'Miss',
  'Follow', 'Seen', 'Signed', 'Attending', 'Resident', 'Nurse', 'Contact', 'Phone', 'Email', 'Address', 'Chief',
  'Complaint', 'Labs', 'Exam', 'Treatment', 'Discharge', 'Admission', 'Chest', 'Pain', 'Blood', 'Pressure', 'Family',
]);
