À
name_subject	name_team	name_role 