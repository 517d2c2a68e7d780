€
<	name_team	name_name"	name_role(08@HRname_created_